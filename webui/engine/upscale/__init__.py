"""Upscaling: the interpolation upscalers AUTOMATIC1111 always has (Lanczos, Nearest, None).

Model upscalers (ESRGAN and friends through spandrel) belong to the Super-resolution work and
register here when it lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from webui.engine.core.errors import InvalidRequest

if TYPE_CHECKING:
    from PIL import Image

MAX_OUTPUT_PIXELS = 8192 * 8192


@dataclass(frozen=True)
class Upscaler:
    name: str
    resample: int | None  # PIL resampling filter; None keeps the image as it is


def builtin_upscalers() -> list[Upscaler]:
    from PIL import Image

    return [Upscaler("None", None), Upscaler("Lanczos", Image.Resampling.LANCZOS), Upscaler("Nearest", Image.Resampling.NEAREST)]


def find_upscaler(name: str | None) -> Upscaler:
    wanted = (name or "None").strip()
    for upscaler in builtin_upscalers():
        if upscaler.name.lower() == wanted.lower():
            return upscaler
    names = ", ".join(u.name for u in builtin_upscalers())
    raise InvalidRequest("upscaler_1", f"unknown upscaler {wanted!r}; available: {names}")


def target_size(width: int, height: int, scale: float | None = None, to_width: int | None = None,
                to_height: int | None = None) -> tuple[int, int]:
    if to_width and to_height:
        size = (int(to_width), int(to_height))
    else:
        if scale is None or not 0 < scale <= 8:
            raise InvalidRequest("upscaling_resize", f"scale must be above 0 and at most 8 (got {scale})")
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size[0] * size[1] > MAX_OUTPUT_PIXELS:
        raise InvalidRequest("upscaling_resize", f"{size[0]}x{size[1]} is larger than Kiri makes")
    return size


def upscale(image: "Image.Image", size: tuple[int, int], first: str | None, second: str | None = None,
            second_visibility: float = 0.0, crop: bool = True) -> "Image.Image":
    """Resize with upscaler 1, optionally blended with upscaler 2; `crop` keeps the aspect ratio
    when a target size is given, cutting the overflow, as AUTOMATIC1111 does."""
    from PIL import Image

    one = find_upscaler(first)
    result = _resize(image.convert("RGB"), size, one, crop)
    if second and second != "None" and second_visibility > 0:
        other = _resize(image.convert("RGB"), size, find_upscaler(second), crop)
        result = Image.blend(result, other, min(1.0, float(second_visibility)))
    return result


def _resize(image: "Image.Image", size: tuple[int, int], upscaler: Upscaler, crop: bool) -> "Image.Image":
    from PIL import ImageOps

    resample = upscaler.resample if upscaler.resample is not None else 1  # "None" still has to reach the size
    if crop and image.size[0] * size[1] != image.size[1] * size[0]:
        return ImageOps.fit(image, size, method=resample)
    return image.resize(size, resample=resample)
