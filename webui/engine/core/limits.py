"""One pixel budget for everything Kiri decodes or makes, with one message.

Input: a picture's width x height, as its header says, before any pixel is decoded, is at most
Settings.max_pixels; so is each frame of a video, and all the frames a video job will decode
together (frames x width x height) are at most Settings.max_video_pixels.
Output: every picture a job would make, the final one and each one on the way (an upscaler
model's own output is its input x the model's scale, before any resize to the target), is at most
Settings.max_output_pixels. A job over budget is refused before it is queued: an InvalidRequest
naming the field, a 422 from the API and a message in the UI.

    check_input("image", 8000, 8000, limit=settings.max_pixels)
    -> InvalidRequest("image", "image is 8000x8000 (64,000,000 pixels); Kiri takes at most 16,777,216 pixels
       (Settings: max_pixels)")

PIL's own decompression-bomb check (Image.MAX_IMAGE_PIXELS) raises before this budget could for
absurd headers; open_image() and load_image() turn it, and any other decoder failure on client
bytes, into the same InvalidRequest.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from webui.engine.core.errors import InvalidRequest

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_OUTPUT_PIXELS", "DEFAULT_MAX_VIDEO_PIXELS", "size_text", "check_input",
           "check_output", "check_video", "open_image", "load_image", "decode_image"]

DEFAULT_MAX_PIXELS = 4096 * 4096  # Settings.max_pixels: a picture or a frame taken in
DEFAULT_MAX_OUTPUT_PIXELS = 8192 * 8192  # Settings.max_output_pixels: a picture made, or made on the way
DEFAULT_MAX_VIDEO_PIXELS = 256 * 4096 * 4096  # Settings.max_video_pixels: all frames a video job decodes

_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, MemoryError, IndexError, TypeError, KeyError,
               ZeroDivisionError, AttributeError, NotImplementedError, RuntimeError, OverflowError)


def size_text(width: int, height: int, frames: int = 1) -> str:
    """"8000x8000 (64,000,000 pixels)", or "300 frames of 4000x4000 (4,800,000,000 pixels)"."""
    pixels = width * height * frames
    return f"{frames} frames of {width}x{height} ({pixels:,} pixels)" if frames != 1 else f"{width}x{height} ({pixels:,} pixels)"


def check_input(field: str, width: int, height: int, frames: int = 1, *, limit: int = DEFAULT_MAX_PIXELS,
                setting: str = "max_pixels") -> None:
    """Refuse a picture (or frames x a frame) larger than `limit`, from its size alone."""
    if width < 1 or height < 1:
        raise InvalidRequest(field, f"{field} is {width}x{height}: it has no pixels")
    if width * height * max(1, frames) > limit:
        raise InvalidRequest(field, f"{field} is {size_text(width, height, max(1, frames))}; "
                                    f"Kiri takes at most {limit:,} pixels (Settings: {setting})")


def check_output(field: str, width: int, height: int, *, limit: int = DEFAULT_MAX_OUTPUT_PIXELS,
                 what: str = "a picture", setting: str = "max_output_pixels") -> None:
    """Refuse a job that would make (or make on the way) a picture larger than `limit`."""
    if width * height > limit:
        raise InvalidRequest(field, f"{field} would make {what} of {size_text(width, height)}; "
                                    f"Kiri makes at most {limit:,} pixels (Settings: {setting})")


def check_video(field: str, width: int, height: int, frames: int, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                max_video_pixels: int = DEFAULT_MAX_VIDEO_PIXELS) -> None:
    """Each frame within max_pixels, and the `frames` a job will decode within max_video_pixels."""
    check_input(field, width, height, limit=max_pixels)
    check_input(field, width, height, max(1, frames), limit=max_video_pixels, setting="max_video_pixels")


def open_image(raw: bytes, field: str = "image", *, limit: int | None = DEFAULT_MAX_PIXELS) -> "Image.Image":
    """Client bytes as a PIL image opened lazily (header read, no pixel decoded), its size checked
    against `limit` (None: only PIL's own bomb check). Anything unreadable names `field`."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError as exc:
        # PIL refuses headers above 2 x Image.MAX_IMAGE_PIXELS itself, before Kiri sees the size.
        cap = limit if limit is not None else 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise InvalidRequest(field, f"{field} is more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels; "
                                    f"Kiri takes at most {cap:,} pixels (Settings: max_pixels)") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure on client bytes is bad input, not a bug
        raise InvalidRequest(field, f"{field} is not an image Kiri can read") from exc
    if limit is not None:
        check_input(field, image.width, image.height, limit=limit)
    elif image.width < 1 or image.height < 1:
        check_input(field, image.width, image.height, limit=0)
    return image


def load_image(image: "Image.Image", field: str = "image") -> "Image.Image":
    """Decode a lazily opened image (after its size was checked); a failure names `field`."""
    from PIL import Image

    try:
        image.load()
    except (Image.DecompressionBombError, *_UNREADABLE) as exc:
        raise InvalidRequest(field, f"{field} is not an image Kiri can read ({type(exc).__name__})") from exc
    return image


def decode_image(raw: bytes, field: str = "image", *, limit: int | None = DEFAULT_MAX_PIXELS) -> "Image.Image":
    """open_image() then load_image(): the size checked on the header, then the pixels decoded."""
    return load_image(open_image(raw, field, limit=limit), field)


def base64_bytes(data: Any, field: str = "image") -> bytes:
    """A client's base64 text (or data: URL) as bytes; anything else is an InvalidRequest naming `field`.
    For the API's images and for add-ons that read images a client sent in their settings (a
    ControlNet unit's image through alwayson_scripts)."""
    import base64
    import binascii

    if not isinstance(data, str):
        raise InvalidRequest(field, f"{field} must be a base64 string")
    if "," in data[:100] and data.startswith("data:"):
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(field, f"{field} is not valid base64") from exc
