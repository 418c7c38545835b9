"""Putting anomaly maps and ground truth on the same pixel grid before pixel metrics.

Without a crop, the map (prior resolution) is upsampled bilinearly to the mask's native
resolution, so thin defects are not lost by downsampling the ground truth. With a crop (the
official MVTec protocol), the mask is resized to the prior resolution and cropped like the map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mdps_ray.core.maps import center_crop


def align(amap: torch.Tensor, gt: torch.Tensor, image_size: int, crop: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """amap (N, h, w) float and gt (N, H, W) bool at native size → both on one grid."""
    if crop is not None:
        gt_small = F.interpolate(gt[:, None].float(), size=(image_size, image_size), mode="nearest")[:, 0] > 0.5
        return amap, center_crop(gt_small, crop)
    if tuple(amap.shape[-2:]) == tuple(gt.shape[-2:]):
        return amap, gt
    up = F.interpolate(amap[:, None].float(), size=tuple(gt.shape[-2:]), mode="bilinear", align_corners=False)
    return up[:, 0], gt
