"""Difference maps, blur, image scores and the mask, against references and by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur as tv_blur

from mdps_ray.core import maps, masking, scores


def test_blur_equals_torchvision_reflect_gaussian() -> None:
    x = torch.rand((2, 1, 64, 64), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(maps.gaussian_blur(x, 4.0), tv_blur(x, [33, 33], [4.0, 4.0]), atol=1e-6)


def test_pixel_distance_is_imagenet_normalised_l1() -> None:
    y = torch.zeros((1, 3, 2, 2))
    x = torch.zeros((1, 3, 2, 2))
    x[:, 0] = 1.0  # +0.5 in [0, 1] on the red channel only
    expected = 0.5 / 0.229 / 3
    assert torch.allclose(maps.pixel_distance(x, y), torch.full((1, 1, 2, 2), expected))
    assert maps.pixel_distance(y, y).abs().max() == 0


def test_feature_cosine_distance_by_hand() -> None:
    a = torch.ones((1, 2, 4, 4))
    b = torch.ones((1, 2, 4, 4))
    b[:, 1] = 0  # cos = 1/√2 everywhere after aggregation of constants... check centre
    d = maps.feature_cosine_distance([a], [b], (4, 4))
    assert d[0, 0, 1, 1].item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)
    assert maps.feature_cosine_distance([a], [a], (8, 8)).abs().max() < 1e-6


def test_per_image_weighting_ignores_batch_mates_and_batch_weighting_does_not() -> None:
    g = torch.Generator().manual_seed(0)
    f, i = torch.rand((3, 1, 8, 8), generator=g), torch.rand((3, 1, 8, 8), generator=g)
    i[2] *= 10  # one image with a large pixel term
    per = maps.combine(f, i, 7.0, "per_image")
    alone = maps.combine(f[:1], i[:1], 7.0, "per_image")
    assert torch.allclose(per[:1], alone)
    batch = maps.combine(f, i, 7.0, "batch")
    assert not torch.allclose(batch[:1], alone)
    # A = f + w (max f / max i) i, per image
    ratio = f[0].max() / i[0].max()
    assert torch.allclose(per[0], f[0] + 7.0 * ratio * i[0])


def test_mean_over_samples_and_crop() -> None:
    rows = torch.arange(6.0).view(6, 1, 1, 1)
    assert maps.mean_over_samples(rows, 3).flatten().tolist() == [1.0, 4.0]
    x = torch.arange(256.0).view(1, 1, 16, 16)
    assert maps.center_crop(x, 8).shape == (1, 1, 8, 8) and maps.center_crop(x, 8)[0, 0, 0, 0] == 4 * 16 + 4
    with pytest.raises(ValueError, match="expected crop size"):
        maps.center_crop(x, 20)


def test_softmax_topk_of_flat_map_is_k_over_pixels() -> None:
    flat = torch.full((1, 1, 224, 224), 3.0)
    assert scores.softmax_topk(flat, 500).item() == pytest.approx(500 / 224**2, rel=1e-5)
    peaked = flat.clone()
    peaked[..., :10, :10] = 10.0
    e10, e3, n = math.exp(10), math.exp(3), 224**2
    expected = (100 * e10 + 400 * e3) / (100 * e10 + (n - 100) * e3)
    assert scores.softmax_topk(peaked, 500).item() == pytest.approx(expected, rel=1e-5)


def test_max_and_mean_topk() -> None:
    a = torch.arange(100.0).view(1, 1, 10, 10)
    assert scores.max_score(a).item() == 99
    assert scores.mean_topk(a, 0.05).item() == pytest.approx((95 + 96 + 97 + 98 + 99) / 5)
    with pytest.raises(ValueError, match="expected score method"):
        scores.image_score(a, "median", 1, 0.1)  # type: ignore[arg-type]


def test_masks_and_thresholds() -> None:
    m = torch.tensor([[[[0.1, 0.5], [0.9, 0.3]]]])
    assert masking.binary_mask(m, 0.4).flatten().tolist() == [0, 1, 1, 0]
    assert masking.transductive_threshold(1.0, 3.0, 0.25) == 1.5
    values = torch.arange(101.0)
    assert masking.quantile_threshold(values, 0.9) == pytest.approx(90.0)
    assert masking._large_quantile(values.double(), 0.9) == pytest.approx(90.0)
    with pytest.raises(ValueError, match="expected 0 < q < 1"):
        masking.quantile_threshold(values, 1.0)


def test_blur_handles_images_smaller_than_the_kernel() -> None:
    x = torch.rand((1, 1, 8, 8))
    out = maps.gaussian_blur(x, 4.0)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.allclose(out.mean(), x.mean(), atol=0.1)
    assert F.mse_loss(out, x) > 0


def test_fuse_stages_adds_the_weighted_stage1_map() -> None:
    a2 = torch.tensor([[[[0.0, 0.0], [0.9, 0.0]]]])
    a1 = torch.tensor([[[[0.1, 0.3], [0.8, 0.2]]]])
    fused = maps.fuse_stages(a2, a1, 0.1)
    assert torch.allclose(fused, torch.tensor([[[[0.01, 0.03], [0.98, 0.02]]]]))
    # the zeros of A₂ are now ordered by A₁, and the masked pixel still ranks first
    assert fused.flatten().argsort().tolist() == [0, 3, 1, 2]
    assert maps.fuse_stages(a2, a1, 0.0) is a2
    with pytest.raises(ValueError, match="expected a stage-1 weight >= 0, got -1"):
        maps.fuse_stages(a2, a1, -1.0)
    with pytest.raises(ValueError, match=r"equal shape, got \(1, 1, 2, 2\) and \(1, 1, 1, 2\)"):
        maps.fuse_stages(a2, a1[..., :1, :], 0.1)


def test_the_level_model_learns_how_normal_levels_follow_contrast_and_stays_in_its_range() -> None:
    """Normal images whose map level grows with their contrast: σ̂(y) recovers it, so relative maps agree."""
    g = torch.Generator().manual_seed(3)
    base = torch.rand((12, 3, 16, 16), generator=g) * 2 - 1
    gain = torch.linspace(0.2, 1.0, 12).view(-1, 1, 1, 1)
    y = gain * base  # one texture under 12 lights
    phi = maps.acquisition_features(y)
    assert phi.shape == (12, 3) and phi.dtype == torch.float64
    assert torch.equal(phi[:, 0], torch.ones(12, dtype=phi.dtype))
    flat = y.flatten(1).double()
    med = flat.median(1, keepdim=True).values  # the lower median, as torch takes it
    mad = (flat - med).abs().median(1).values
    assert torch.allclose(phi[:, 1], mad.log(), atol=1e-9) and torch.allclose(phi[:, 2], med.flatten(), atol=1e-9)
    old = maps.acquisition_features(y, features="observation")  # calibrations made before "ordinary"
    assert torch.allclose(old[:, 1], (flat - med).abs().mean(1).log()) and torch.allclose(old[:, 2], flat.mean(1))
    sigma = (0.05 * mad**1.5).float()  # the prior's error on normals: every difference grows with the contrast
    model = maps.fit_level_model(phi, sigma)
    assert model.features == "ordinary"
    assert model.lo == pytest.approx(float(sigma.min())) and model.hi == pytest.approx(float(sigma.max()))
    assert model.beta[1] == pytest.approx(1.5, abs=1e-3)
    assert torch.allclose(maps.expected_level(phi, model).float(), sigma, rtol=1e-3)
    a = sigma.view(-1, 1, 1, 1) * torch.rand((12, 1, 8, 8), generator=g)
    rel = maps.relative_to_level(a, maps.expected_level(phi, model))
    assert rel.dtype == a.dtype and float(rel.amax()) <= 1.0 + 1e-3  # every normal in the same units
    # an image unlike every normal one is divided by the fitted range's end, not an extrapolation
    far = maps.acquisition_features(torch.zeros(1, 3, 16, 16))
    assert float(maps.expected_level(far, model)) == pytest.approx(float(sigma.min()))
    with pytest.raises(ValueError, match="expected one level per feature row"):
        maps.fit_level_model(phi, sigma[:3])


def test_the_acquisition_is_measured_on_the_pixels_the_first_map_finds_ordinary() -> None:
    """A defect raises the first map where it is; the features come from the other half of the image, so the
    defect cannot move them — a mean absolute deviation over every pixel grew ×10 with a large bright square."""
    g = torch.Generator().manual_seed(5)
    y = 0.05 * torch.randn((1, 3, 32, 32), generator=g)  # a low-contrast normal texture
    defect = y.clone()
    defect[..., 4:20, 4:20] = 0.9  # a bright square over a quarter of the image
    first = torch.zeros(1, 1, 32, 32)
    first[..., 3:21, 3:21] = 1.0  # its first map: high on the square and its blurred edge
    clean, hit = maps.acquisition_features(y, first), maps.acquisition_features(defect, first)
    assert torch.equal(clean, hit)  # only ordinary pixels count, and the square is not among them
    everywhere = maps.acquisition_features(defect, features="observation")
    assert float(everywhere[0, 1] - maps.acquisition_features(y, features="observation")[0, 1]) > 1.0  # ×e and more
    ordinary = (first <= first.median()).expand_as(y)
    assert float(clean[0, 2]) == pytest.approx(float(y[ordinary].double().median()))
    with pytest.raises(ValueError, match="expected a first map"):
        maps.acquisition_features(y, first[..., :16])


def test_the_level_model_is_fitted_on_the_host_in_float64() -> None:
    """CUDA's lstsq accepts only the gels driver: calibration of relative maps on a GPU crashed at its end.
    The fit runs on the host whatever the inputs' device and dtype."""
    phi = torch.tensor([[1.0, -2.0, 0.1], [1.0, -1.0, 0.0], [1.0, -3.0, -0.2], [1.0, -1.5, 0.3]])
    sigma = torch.tensor([0.1, 0.2, 0.05, 0.15])
    model = maps.fit_level_model(phi.float(), sigma.half())
    assert all(isinstance(b, float) for b in model.beta)
    ref = torch.linalg.lstsq(phi.double(), sigma.half().double().log().unsqueeze(1)).solution.flatten()
    assert model.beta == pytest.approx(ref.tolist(), abs=1e-9)


def test_the_stage1_level_of_a_map_is_its_median_floored() -> None:
    m = torch.rand((3, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    assert torch.allclose(maps.image_level(m), m.flatten(1).median(1).values)
    assert float(maps.image_level(torch.zeros(1, 1, 4, 4))) == pytest.approx(maps.MIN_IMAGE_LEVEL)
