"""Image plumbing shared by the preprocessors: RGB conversion and sd-webui-controlnet's processing size.

sd-webui-controlnet runs a preprocessor on the image scaled so that its short side is the
processor resolution and padded (edge pixels) to a multiple of 64, then cuts the padding off
(``resize_image_with_pad``). `at_resolution` does the same and also scales the map back to the
input's size, with an interpolation that suits the kind of map.
"""

from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np

from webui.engine.core.errors import InvalidRequest


def as_rgb(image: Any, field: str = "image") -> np.ndarray:
    """HxWx3 uint8 RGB from HxW, HxWx1, HxWx3 or HxWx4 (alpha composited on white, as HWC3 does)."""
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer) and arr.size and arr.min() >= 0 and arr.max() <= 255:
            arr = arr.astype(np.uint8)
        else:
            raise InvalidRequest(field, f"{field} must be 8-bit pixels (uint8), got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidRequest(field, f"{field} must be an HxW, HxWx3 or HxWx4 picture, got shape {arr.shape}")
    if arr.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if arr.shape[2] == 4:
        colour = arr[:, :, :3].astype(np.float32)
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        return (colour * alpha + 255.0 * (1.0 - alpha)).round().clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def pad64(x: int) -> int:
    return int(np.ceil(float(x) / 64.0) * 64 - x)


def processing_size(shape: tuple[int, int], resolution: int) -> tuple[int, int]:
    """(H, W) with the short side at `resolution`, as sd-webui-controlnet's resize_image_with_pad."""
    h, w = shape
    k = float(resolution) / float(min(h, w))
    return max(1, int(round(h * k))), max(1, int(round(w * k)))


def resize_to(image: np.ndarray, shape: tuple[int, int], kind: str = "smooth") -> np.ndarray:
    """Resize an HxWx3 uint8 map to (H, W).

    kind "smooth" (photos, depth, blur): area when shrinking, cubic when growing; "labels" (flat
    colours: segmentation): nearest, so no new colours appear; "binary" (edges): smooth, then
    Otsu's threshold back to pure black and white, so thin lines survive shrinking.
    """
    h, w = shape
    if image.shape[:2] == (h, w):
        return image
    if kind == "labels":
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_NEAREST)
    shrink = h * w < image.shape[0] * image.shape[1]
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    if out.ndim == 2:
        out = out[:, :, None]
    if kind == "binary":
        grey = out.astype(np.float32).mean(axis=2).clip(0, 255).astype(np.uint8)
        if grey.max() > 0:
            _, grey = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        out = grey[:, :, None]
    return as_rgb(out)


def at_resolution(image: np.ndarray, resolution: int, fn: Callable[[np.ndarray], np.ndarray],
                  kind: str = "smooth") -> np.ndarray:
    """Run `fn` on the image at the processing resolution (edge-padded to 64) and return its map at the input's size.

    Edge detectors ("binary") never work above the input's own size: an upscaled picture is smoother,
    its gradients fall under canny's thresholds and a 64 px picture at 512 gives no edges at all
    (sd-webui-controlnet upscales anyway; its inputs are rarely smaller than the resolution)."""
    h_raw, w_raw = image.shape[:2]
    if kind == "binary":
        resolution = min(resolution, min(h_raw, w_raw))
    h, w = processing_size((h_raw, w_raw), resolution)
    up = h * w > h_raw * w_raw
    scaled = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC if up else cv2.INTER_AREA)
    padded = np.pad(scaled, [[0, pad64(h)], [0, pad64(w)], [0, 0]], mode="edge")
    result = as_rgb(fn(np.ascontiguousarray(padded)))[:h, :w]
    return resize_to(np.ascontiguousarray(result), (h_raw, w_raw), kind)
