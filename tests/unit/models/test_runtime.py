"""Speed knobs change nothing but speed: optimised vs plain scorer, and the benchmark reference."""

from __future__ import annotations

import pytest
import torch

from benchmarks.reference_mdps import reference_score
from mdps_ray.config.method import MapConfig, MdpsConfig, RuntimeConfig
from mdps_ray.method.scorer import AnomalyScorer
from mdps_ray.models.backbones import build_backbone
from mdps_ray.models.prior import build_unet
from mdps_ray.models.runtime import prepare_unet, unet_denoiser
from tests.helpers.models import TINY_PRIOR, tiny_sampler

IDS = ["a", "b", "c"]
MAPS = MapConfig(backbone="random", blur_sigma=1.0, stage1_weight=0.0, normalise="none")  # as the official code


def _scorer(unet: torch.nn.Module, runtime: RuntimeConfig, **sampler: object) -> AnomalyScorer:
    u = build_unet(TINY_PRIOR)
    u.load_state_dict(unet.state_dict())
    u = prepare_unet(u, torch.device("cpu"), runtime.channels_last, runtime.compile, runtime.precision)
    return AnomalyScorer(
        unet_denoiser(u, runtime.precision, runtime.channels_last),
        TINY_PRIOR,
        tiny_sampler(**sampler),
        MAPS,
        MdpsConfig().score,
        build_backbone("random", None),
        0.05,  # tiny_sampler's explicit mask threshold
    )


def test_channels_last_equals_the_plain_path(tiny_unet: torch.nn.Module) -> None:
    y = torch.rand((3, 3, 16, 16), generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert RuntimeConfig().channels_last  # the default: the plain path must be asked for
    plain = _scorer(tiny_unet, RuntimeConfig(channels_last=False)).score(y, IDS)
    fast = _scorer(tiny_unet, RuntimeConfig(channels_last=True)).score(y, IDS)
    assert torch.allclose(plain.anomaly_map, fast.anomaly_map, atol=1e-5)
    assert torch.allclose(plain.score, fast.score, atol=1e-5)


def test_bf16_casts_the_unet_and_stays_close(tiny_unet: torch.nn.Module) -> None:
    """bf16 weights, fp32 maths outside the UNet: same shapes and dtypes, maps close to fp32's."""
    y = torch.rand((2, 3, 16, 16), generator=torch.Generator().manual_seed(3)) * 2 - 1
    plain = _scorer(tiny_unet, RuntimeConfig(channels_last=False)).score(y, IDS[:2])
    low_scorer = _scorer(tiny_unet, RuntimeConfig(precision="bf16", channels_last=False))
    low = low_scorer.score(y, IDS[:2])
    assert low.anomaly_map.dtype == torch.float32 and low.reconstruction.dtype == torch.float32
    assert torch.isfinite(low.anomaly_map).all()
    rel = (low.anomaly_map - plain.anomaly_map).abs().mean() / plain.anomaly_map.abs().mean()
    assert 0 < rel < 0.1, f"bf16 maps differ from fp32 by {rel:.3f} of their mean"
    assert torch.corrcoef(torch.stack([low.anomaly_map.flatten(), plain.anomaly_map.flatten()]))[0, 1] > 0.95


def test_the_channels_last_path_converts_the_unet_and_the_plain_one_does_not() -> None:
    """The comparison above compares two paths: the weights' memory formats differ."""
    def conv_weight(channels_last: bool) -> torch.Tensor:
        u = prepare_unet(build_unet(TINY_PRIOR), torch.device("cpu"), channels_last, False, "fp32")
        return next(m.weight for m in u.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))

    assert conv_weight(True).is_contiguous(memory_format=torch.channels_last)
    assert not conv_weight(True).is_contiguous()
    assert conv_weight(False).is_contiguous()


def test_bf16_weights_and_fp32_eps() -> None:
    fp32 = build_unet(TINY_PRIOR)
    u = prepare_unet(fp32, torch.device("cpu"), False, False, "bf16")
    assert {p.dtype for p in u.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in fp32.parameters()} == {torch.float32}, "the caller's module must stay fp32"
    eps = unet_denoiser(u, "bf16")(torch.zeros(1, 3, 16, 16), torch.tensor([5]))
    assert eps.dtype == torch.float32


def test_unknown_precision_is_refused(tiny_unet: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="expected precision fp32, bf16 or fp16"):
        unet_denoiser(tiny_unet, "int8")


def test_benchmark_reference_equals_ours_for_one_image(tiny_unet: torch.nn.Module) -> None:
    """With one image per batch, the official structure's batch-wide rules coincide with ours."""
    cfg = MdpsConfig(prior=TINY_PRIOR, sampler=tiny_sampler(alignment="code", masked_sampler="replace"), maps=MAPS)
    y = torch.rand((1, 3, 16, 16), generator=torch.Generator().manual_seed(4)) * 2 - 1
    ours = _scorer(tiny_unet, RuntimeConfig(), alignment="code", masked_sampler="replace").score(y, ["a"])
    ref_unet = build_unet(TINY_PRIOR).eval()
    ref_unet.load_state_dict(tiny_unet.state_dict())
    scores, maps = reference_score(ref_unet, build_backbone("random", None), y, ["a"], cfg, 0.05)
    assert torch.allclose(maps, ours.anomaly_map, atol=1e-5)
    assert torch.allclose(scores, ours.score, atol=1e-5)


def test_a_gpu_this_torch_cannot_use_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from mdps_ray.models.runtime import DeviceError, check_device

    check_device(torch.device("cpu"))  # nothing to check
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"sees no device; the driver is likely older than this build needs"):
        check_device(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_80", "sm_90"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla V100")
    with pytest.raises(DeviceError, match=r"got compute capability 7\.0 \(Tesla V100\)"):
        check_device(torch.device("cuda"))
