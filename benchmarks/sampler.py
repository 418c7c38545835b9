"""Speed of MDPS scoring: a reference with the official code's structure vs mdps-ray, one run.

    python benchmarks/sampler.py                        # CPU, the tiny-but-realistic setting
    python benchmarks/sampler.py --prior paper --image-size 256 --device cuda --batch 8   # GPU

Same model (random weights, seeded), same images, same settings (T′, stride, ρ, n, mask threshold,
the code's timestep labelling and RePaint-style masked sampler) for every row. Prints images/s,
s/image, the ratio to the reference, the largest map/score differences (with one image per batch
the reference's batch-wide norm equals our per-image norm, so those must agree), FLOPs per image
(torch's per-operator formulas, ``benchmarks/flops.py``) and achieved FLOP/s against this machine's
measured matmul peak.
fp32 rows must equal the reference for one image (1e-3); bf16/fp16 rows must stay within what changing
the sampler seed alone does to the fp32 map. The last line is ``speedup: <best ours / reference>``
over the rows within their tolerance; the line before it counts the fp32 rows only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root

from benchmarks.flops import count_flops
from benchmarks.reference_mdps import reference_score
from mdps_ray.api import build_scorer
from mdps_ray.config.method import MdpsConfig, PriorConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.config.presets import DEFAULT, PAPER_PRIOR
from mdps_ray.data.images import load_images
from mdps_ray.data.records import list_mvtec
from mdps_ray.data.synthetic import make_dataset
from mdps_ray.models.prior import build_unet, count_parameters
from mdps_ray.models.runtime import set_tf32
from mdps_ray.storage.weights import weights_dir


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10,
                max_call_s: float = 1.0) -> tuple[float, int]:
    """Measured dense matmul FLOP/s and the side used: the mean of ``reps`` (≥ 10) n³ products after two
    warm-up calls (one small product times launch overhead, not the peak). TF32 must be off for fp32.
    The side is halved while one product takes over ``max_call_s`` (bf16 on a CPU without bf16
    instructions is emulated: 2048³ took a minute)."""
    while True:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        if time.perf_counter() - t0 <= max_call_s or n <= 128:
            break
        n //= 2
    a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0), n


def theoretical_cpu_peak(cores: int) -> tuple[float, str]:
    """cores × clock × FP32 FLOP per cycle (2 FMA units × SIMD lanes × 2), from /proc/cpuinfo; 0 if unknown."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 0.0, "unknown (no /proc/cpuinfo)"
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    mhz = [float(line.split(":", 1)[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    ghz = int(max_freq.read_text()) / 1e6 if max_freq.exists() else (max(mhz) / 1e3 if mhz else 0.0)
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle = 2 * lanes * 2 if "fma" in flags or lanes == 16 else lanes * 2
    isa = "avx512" if lanes == 16 else "avx2" if lanes == 8 else "sse"
    family = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("cpu family")), "")
    if lanes == 16 and "AuthenticAMD" in info and family == "25":  # Zen 4: AVX-512 on two 256-bit FMA units
        per_cycle, isa = per_cycle // 2, "avx512 on 256-bit units (AMD Zen 4)"
    text = f"{cores} cores x {ghz:.2f} GHz x {per_cycle} FP32 FLOP/cycle ({isa}, 2 FMA units assumed)"
    return cores * ghz * 1e9 * per_cycle, text


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device, reps: int) -> tuple[float, float]:
    """Best of ``reps`` seconds after a warm-up (and compilation) call, and the peak GPU MiB (0 on CPU)."""
    fn()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return best, mem


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", choices=["default", "paper"], default="default")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, nargs="+", default=[4],
                   help="images per scoring call; the reference and the exact fp32 rows run at the first only")
    p.add_argument("--n-samples", type=int, nargs="+", default=[4])
    p.add_argument("--start-step", type=int, default=200)
    p.add_argument("--stride", type=int, default=20)
    p.add_argument("--rho", type=float, default=30.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--peak-size", type=int, default=None, help="matmul side for the peaks (8192 on CUDA, 2048 on CPU)")
    p.add_argument("--variants", nargs="+", default=["fp32", "channels_last", "bf16"], choices=list(VARIANTS))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device(args.device)
    set_tf32(device, False)  # the reference and every exact row: true fp32 (cuDNN allows TF32 by default)
    prior = (PAPER_PRIOR if args.prior == "paper" else DEFAULT.prior).model_copy(update={"image_size": args.image_size})
    backbone = "lpips-alex" if (weights_dir() / "lpips-alex.safetensors").exists() else "random"
    with tempfile.TemporaryDirectory() as tmp:
        size = max(args.batch)
        root = make_dataset(Path(tmp), size=args.image_size, n_train=0, n_test_good=size, n_test_defect=1)
        records = list_mvtec(str(root), "test")[:size]
        y_all = load_images([r.uri for r in records], args.image_size).to(device)
    ids_all = [r.image_id for r in records]
    unet = build_unet(prior)
    peak_n = args.peak_size or (8192 if device.type == "cuda" else 2048)
    peak, n32 = matmul_peak(device, torch.float32, peak_n)
    peak_bf16, n16 = matmul_peak(device, torch.bfloat16, peak_n)
    print(
        f"device {device}{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, torch "
        f"{torch.__version__}, prior {args.prior} {count_parameters(unet) / 1e6:.2f} M params, {args.image_size} px, "
        f"T' {args.start_step}, stride {args.stride}, rho {args.rho}, backbone {backbone}, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"matmul peak (mean of 10 after warm-up): fp32 {peak / 1e12:.3f} TFLOP/s at {n32}^3 (TF32 off), "
          f"bf16 {peak_bf16 / 1e12:.3f} TFLOP/s at {n16}^3")
    if device.type == "cpu":
        theory, how = theoretical_cpu_peak(torch.get_num_threads())
        print(f"theoretical fp32 peak: {theory / 1e12:.3f} TFLOP/s = {how}")
    print(f"{'n':>2s} {'batch':>5s} {'variant':28s} {'img/s':>8s} {'ms/img':>8s} {'ratio':>6s} {'1-img dmap':>10s} "
          f"{'1-img rel':>9s} {'GFLOP/img':>9s} {'TFLOP/s':>8s} {'%peak':>6s} {'%bf16pk':>7s} {'GPU MiB':>8s}")
    best_exact = best = 0.0
    for n in args.n_samples:
        ctx = Context.build(unet, prior, backbone, args, n, y_all[:1], ids_all[:1], device)
        t_ref = None
        for b_index, batch in enumerate(args.batch):
            y, ids = y_all[:batch], ids_all[:batch]
            if b_index == 0:
                t_ref, mem = timed(lambda c=ctx, y=y, ids=ids: c.reference(y, ids), device, args.reps)
                Row(n, batch, "reference (official structure)", t_ref, batch, t_ref, ctx.ref_flops, None, None, True,
                    peak, peak_bf16, mem).print()
            for name in args.variants:
                exact_row = VARIANTS[name].get("precision", "fp32") == "fp32" and not VARIANTS[name].get("tf32")
                if b_index > 0 and exact_row:
                    continue
                cfg = ctx.base.model_copy(update={"runtime": ctx.base.runtime.model_copy(update=VARIANTS[name])})
                u = build_unet(prior)
                u.load_state_dict(unet.state_dict())
                scorer = build_scorer(u, cfg, device)
                t, mem = timed(lambda s=scorer, y=y, ids=ids: s.score(y, ids), device, args.reps)
                one = scorer.score(y[:1], ids[:1]).anomaly_map
                diff, rel = (one - ctx.one_ref_maps).abs().max().item(), relative_difference(one, ctx.one_ref_maps)
                low = not exact_row
                agree = rel <= ctx.seed_rel if low else diff <= 1e-3 * max(ctx.one_ref_maps.abs().max().item(), 1)
                ratio_to = t_ref * batch / args.batch[0]  # the reference's time for this batch, scaled per image
                Row(n, batch, f"ours {name}", t, batch, ratio_to, ctx.flops, diff, rel, agree,
                    peak_bf16 if cfg.runtime.precision != "fp32" else peak, peak_bf16, mem, low).print()
                if agree:
                    best = max(best, ratio_to / t)
                    if not low:
                        best_exact = max(best_exact, ratio_to / t)
                set_tf32(device, False)
        print(f"n={n}: FLOPs per image: ours {ctx.flops / 1e9:.2f} GFLOP, reference {ctx.ref_flops / 1e9:.2f} GFLOP "
              f"(its redundant no-grad forward); low-precision tolerance (seed-change rel): {ctx.seed_rel:.3f}")
    print(
        "ratio = the reference's s/image at the first batch over the row's; '1-img dmap' (one image per batch, where "
        "the reference's batch-wide norm and our per-image norm coincide) must be ~0 for exact fp32 rows; "
        "'1-img rel' = mean|dmap| / mean|map|; low-precision and TF32 rows must stay within what a change of "
        "sampler seed alone moves the fp32 map. TFLOP/s counts each row's own FLOPs (the reference's for it)."
    )
    print(f"speedup, fp32 rows (maps equal within 1e-3): {best_exact:.2f}")
    print(f"speedup: {best:.2f}")
    return 0


@dataclass
class Context:
    """What every row of one n shares: the config, the mask threshold, the reference's 1-image maps, FLOPs."""

    base: MdpsConfig
    threshold: float
    ref_unet: torch.nn.Module
    backbone: object
    one_ref_maps: torch.Tensor
    seed_rel: float
    flops: float
    ref_flops: float

    def reference(self, y: torch.Tensor, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return reference_score(self.ref_unet, self.backbone, y, ids, self.base, self.threshold)

    @classmethod
    def build(cls, unet: torch.nn.Module, prior: PriorConfig, backbone: str, args: argparse.Namespace, n: int,
              y1: torch.Tensor, ids1: list[str], device: torch.device) -> Context:
        st = f"start_step: {args.start_step}, stride: {args.stride}, rho: {args.rho}, n_samples: {n}"
        base = apply_overrides(DEFAULT.model_copy(update={"prior": prior}), [
            f"sampler.stage1={{{st}}}", f"sampler.stage2={{{st}}}", "sampler.alignment=code",
            "sampler.masked_sampler=replace", f"maps.backbone={backbone}", f"maps.blur_sigma={args.image_size / 64}",
            "maps.stage1_weight=0",  # the official final map is the stage-2 map alone
        ])
        unmasked = build_scorer(unet, base, device)
        threshold = float(torch.quantile(unmasked.stage1(y1, ids1).anomaly_map.flatten(), 0.95))
        base = apply_overrides(base, {"sampler.mask.threshold": threshold})  # every scorer below masks with it
        plain = build_scorer(unet, base, device)
        ref_unet = build_unet(prior).to(device).eval()  # the official code leaves requires_grad on
        ref_unet.load_state_dict(unet.state_dict())
        (_, one_ref_maps), ref_flops = count_flops(
            lambda: reference_score(ref_unet, plain.backbone, y1, ids1, base, threshold))
        _, flops = count_flops(lambda: plain.score(y1, ids1))
        # the tolerance for low-precision rows: how far the fp32 map moves when only the sampler's seed changes
        reseeded = base.model_copy(update={"sampler": base.sampler.model_copy(update={"seed": base.sampler.seed + 1})})
        seed_rel = relative_difference(build_scorer(unet, reseeded, device).score(y1, ids1).anomaly_map, one_ref_maps)
        return cls(base, threshold, ref_unet, plain.backbone, one_ref_maps, seed_rel, flops, ref_flops)


VARIANTS = {
    "fp32": {"channels_last": False},
    "tf32": {"channels_last": False, "tf32": True},
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16", "channels_last": False},
    "bf16_channels_last": {"precision": "bf16", "channels_last": True},
    "fp16": {"precision": "fp16", "channels_last": True},
    "compile": {"compile": True},
    "bf16_compile": {"precision": "bf16", "compile": True},
}


def relative_difference(a: torch.Tensor, ref: torch.Tensor) -> float:
    """mean |a − ref| / mean |ref|."""
    return ((a - ref).abs().mean() / ref.abs().mean().clamp_min(1e-12)).item()


@dataclass
class Row:
    n: int
    batch: int
    name: str
    seconds: float
    images: int
    ref_seconds: float
    flops_per_image: float
    one_diff: float | None
    one_rel: float | None
    agree: bool
    peak: float
    peak_bf16: float
    gpu_mib: float
    low_precision: bool = False

    def print(self) -> None:
        achieved = self.flops_per_image * self.images / self.seconds
        one = "" if self.one_diff is None else f"{self.one_diff:.2e}"
        rel = "" if self.one_rel is None else f"{self.one_rel:.3f}"
        tolerance = "seed-noise tolerance" if self.low_precision else "1e-3 of the reference"
        mark = f"  ({'within' if self.agree else 'outside'} {tolerance})" if self.one_diff is not None else ""
        print(
            f"{self.n:2d} {self.batch:5d} {self.name:28s} {self.images / self.seconds:8.3f} "
            f"{1e3 * self.seconds / self.images:8.1f} {self.ref_seconds / self.seconds:6.2f} {one:>10s} {rel:>9s} "
            f"{self.flops_per_image / 1e9:9.2f} {achieved / 1e12:8.4f} {100 * achieved / self.peak:6.2f} "
            f"{100 * achieved / self.peak_bf16:7.2f} {self.gpu_mib:8.0f}{mark}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
