"""Why does the score follow the mask's firing? Score rules compared on one prior, offline.

    python benchmarks/map_rules.py --model /tmp/q_lit/models/kolektorsdd_lit --data /tmp/dev/kolektorsdd_lit

The prior comes from --model, the sampler, maps and score settings from today's default (as the
quality harness does); the raw maps (``maps.normalise=none``) are what every rule starts from.

Stage 1 runs once per image (held-out normals and test/); each mask rule runs stage 2 once more;
every fused map and score rule is then computed from the saved maps. Prints, per rule, image and
pixel AUROC, and for the default the diagnosis: how often the mask fires on normals and how the
normal scores follow the image's contrast (σ_y) and the firing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdps_ray.api import build_scorer
from mdps_ray.config.method import MdpsConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.core import maps as core_maps
from mdps_ray.core import masking, scores
from mdps_ray.data.images import iter_batches, load_masks, native_mask_size
from mdps_ray.data.records import list_mvtec
from mdps_ray.data.splits import split_holdout
from mdps_ray.metrics.alignment import align
from mdps_ray.storage.checkpoints import load_prior
from mdps_ray.workflows import split_metrics


def stage1_pass(scorer, records, batch_size):
    ys, a1s, ids_all = [], [], []
    for y, ids, _ in iter_batches(records, scorer.read_size, batch_size):
        ys.append(y)
        a1s.append(scorer.stage1(y, ids).anomaly_map)
        ids_all += ids
    return torch.cat(ys), torch.cat(a1s), ids_all


def stage2_pass(scorer, y, ids, mask, batch_size):
    out = []
    for i in range(0, len(ids), batch_size):
        out.append(scorer.run_stage(y[i:i + batch_size], ids[i:i + batch_size], scorer.sampler.stage2, "stage2",
                                    mask[i:i + batch_size]).anomaly_map)
    return torch.cat(out)


def contrast(y):
    """Per-image spread of the observation, (B, 1, 1, 1): MAD(y), the contrast feature of the level model."""
    return core_maps.acquisition_features(y)[:, 1].exp().float().view(-1, 1, 1, 1)


def top(amap):
    return scores.mean_topk(amap, 0.01)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    loaded = load_prior(args.model)
    # as the quality harness: the prior of the model, the sampler, maps and score of today's default
    defaults = MdpsConfig()
    config = loaded.config.model_copy(update={k: getattr(defaults, k) for k in ("sampler", "maps", "score", "runtime")})
    config = apply_overrides(config, ["maps.normalise=none"])  # every rule below starts from the raw maps
    scorer = build_scorer(loaded.unet, config, torch.device("cpu"))
    _, holdout = split_holdout(list_mvtec(args.data, "train"), 0.1)
    test = list_mvtec(args.data, "test")
    q = config.sampler.mask.quantile
    w = config.maps.stage1_weight
    yh, a1h, idh = stage1_pass(scorer, holdout, args.batch_size)
    yt, a1t, idt = stage1_pass(scorer, test, args.batch_size)
    gt_size = native_mask_size(test) or scorer.read_size
    gt = load_masks(test, gt_size)[:, 0]
    labels = np.array([r.label for r in test])
    sh = contrast(yh)

    def evaluate(name, f_test, note=""):
        s = top(f_test)
        amaps, g = align(f_test[:, 0].detach(), gt, scorer.read_size, None)
        m = split_metrics(test, s.detach(), amaps, g)
        print(f"{name:28s} image {m['image_auroc']:.3f} pixel {m['pixel_auroc']:.3f} {note}", flush=True)
        return s

    def two_stage(n1h, n1t):
        """mask on the (normalised) stage-1 maps at the calibrated quantile; raw stage-2 maps."""
        tau = masking.quantile_threshold(n1h, q)
        mh, mt = masking.binary_mask(n1h, tau), masking.binary_mask(n1t, tau)
        a2h = stage2_pass(scorer, yh, idh, mh, args.batch_size)
        return mh, mt, a2h, stage2_pass(scorer, yt, idt, mt, args.batch_size)

    mh, mt, a2h, a2t = two_stage(a1h, a1t)
    fired_h = mh.flatten(1).sum(1) > 0
    fired_t = mt.flatten(1).sum(1) > 0
    default_h = top(a2h + w * a1h)
    s_def = evaluate("default", a2t + w * a1t)
    print(f"  mask fired: holdout normals {fired_h.float().mean():.2f}, test normals "
          f"{fired_t[labels == 0].float().mean():.2f}, test defects {fired_t[labels == 1].float().mean():.2f}")
    rho_c = stats.spearmanr(sh.flatten().numpy(), default_h.numpy()).statistic
    print(f"  holdout: spearman(score, contrast) {rho_c:.2f}; score fired {default_h[fired_h].mean():.4f} "
          f"not fired {default_h[~fired_h].mean():.4f}")
    s1_normals = top(a1h)
    print(f"  holdout: spearman(stage1 score, contrast) "
          f"{stats.spearmanr(sh.flatten().numpy(), s1_normals.numpy()).statistic:.2f}")
    evaluate("stage1_only", a1t)
    # per-image levels: σ = median of the image's own stage-1 map; σ_ref = the median σ of held-out normals
    med_h = a1h.flatten(1).median(1).values.view(-1, 1, 1, 1)
    med_t = a1t.flatten(1).median(1).values.view(-1, 1, 1, 1)
    spread = torch.quantile(med_h.flatten(), torch.tensor([0.1, 0.5, 0.9]))
    print(f"  sigma: holdout q10/q50/q90 {[round(float(v), 4) for v in spread]}")
    # the level a normal image of this acquisition has (core/maps.py, what maps.normalise=acquisition fits)
    level_model = core_maps.fit_level_model(core_maps.acquisition_features(yh), med_h.flatten())
    pred_h = core_maps.expected_level(core_maps.acquisition_features(yh), level_model).float().view(-1, 1, 1, 1)
    pred_t = core_maps.expected_level(core_maps.acquisition_features(yt), level_model).float().view(-1, 1, 1, 1)
    r2 = 1 - float(((med_h.log() - pred_h.log()) ** 2).sum() / ((med_h.log() - med_h.log().mean()) ** 2).sum())
    print(f"  acquisition fit on holdout: R^2 {r2:.2f}, model {level_model}")
    for name, lh, lt in (("median", med_h, med_t), ("acquisition", pred_h, pred_t)):
        evaluate(f"stage1/{name}", a1t / lt)
        mh3, _mt3, a2h3, a2t3 = two_stage(a1h / lh, a1t / lt)
        norm_h = top((a2h3 + w * a1h) / lh)
        print(f"  {name}: mask fired on holdout {(mh3.flatten(1).sum(1) > 0).float().mean():.2f}, "
              f"spearman(score, contrast) {stats.spearmanr(sh.flatten().numpy(), norm_h.numpy()).statistic:.2f}")
        evaluate(f"2stage/{name} w={w}", (a2t3 + w * a1t) / lt)
        evaluate(f"2stage/{name} w=1", (a2t3 + a1t) / lt)
    del s_def
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
