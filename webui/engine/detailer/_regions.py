"""From a segmenter's masks to the regions a unit redraws, as ADetailer orders it: split into
regions, filter by size (a region's box over the picture's area), keep the k largest, then grow or
shrink, offset, and merge (or merge and invert). Pure numpy on bool masks (H, W)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from webui.engine.segment import mask_tools


def split_regions(masks: Sequence[np.ndarray], min_pixels: int = 4) -> list[np.ndarray]:
    """Each mask's 8-connected parts as separate regions (a segmenter answers one mask for "star"
    however many stars there are; ADetailer redraws each found object apart)."""
    import cv2

    regions: list[np.ndarray] = []
    for mask in masks:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        for label in range(1, count):
            if stats[label, cv2.CC_STAT_AREA] >= min_pixels:
                regions.append(labels == label)
    return regions


def box_ratio(mask: np.ndarray) -> float:
    """The region's bounding box area over the picture's area (ADetailer's ad_mask_min/max_ratio)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return 0.0
    return float((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)) / mask.size


def select(regions: list[np.ndarray], min_ratio: float = 0.0, max_ratio: float = 1.0, k_largest: int = 0) -> list[np.ndarray]:
    """The regions whose box ratio is within [min_ratio, max_ratio], largest box first, the first k (0: all)."""
    kept = [(box_ratio(r), r) for r in regions]
    kept = [(ratio, r) for ratio, r in kept if min_ratio <= ratio <= max_ratio]
    kept.sort(key=lambda pair: -pair[0])
    if k_largest > 0:
        kept = kept[:k_largest]
    return [r for _, r in kept]


def offset(mask: np.ndarray, x: int, y: int) -> np.ndarray:
    """The mask moved right by x and up by y pixels (ADetailer's offsets), what leaves the picture dropped."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    dy = -y
    src = mask[max(0, -dy):h - max(0, dy), max(0, -x):w - max(0, x)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, x):max(0, x) + src.shape[1]] = src
    return out


def preprocess(regions: list[np.ndarray], dilate_erode: int = 0, x_offset: int = 0, y_offset: int = 0,
               merge_invert: str = "None") -> list[np.ndarray]:
    """Grow (> 0) or shrink (< 0) each region, move it, then "Merge" them into one or "Merge and
    Invert" (everything but them); empty ones are dropped."""
    out = []
    for region in regions:
        if dilate_erode > 0:
            region = mask_tools.grow(region, dilate_erode)
        elif dilate_erode < 0:
            region = mask_tools.shrink(region, -dilate_erode)
        if x_offset or y_offset:
            region = offset(region, x_offset, y_offset)
        out.append(region)
    if merge_invert in ("Merge", "Merge and Invert") and out:
        merged = mask_tools.union(out)
        out = [~merged if merge_invert == "Merge and Invert" else merged]
    return [r for r in out if r.any()]


def unit_regions(masks: Sequence[np.ndarray], unit) -> list[np.ndarray]:
    """A unit's regions from a segmenter's masks, in ADetailer's order of steps."""
    regions = select(split_regions(masks), unit.ad_mask_min_ratio, unit.ad_mask_max_ratio, unit.ad_mask_k_largest)
    return preprocess(regions, unit.ad_dilate_erode, unit.ad_x_offset, unit.ad_y_offset, unit.ad_mask_merge_invert)


def region_prompts(text: str, count: int) -> list[str]:
    """`[SEP]` splits a unit's prompt per region (ADetailer): region i gets part i, the last part for
    the rest; empty parts are "" (the main prompt is used there)."""
    from ._units import SEP

    parts = [p.strip() for p in (text or "").split(SEP)]
    return [parts[min(i, len(parts) - 1)] for i in range(count)]
