"""Saving generated images the way AUTOMATIC1111 names and tags them.

Files are numbered `00012-1234567.png` (running number, then seed) so existing output folders
and tools keep working, and the infotext travels inside the file. Each file appears under its
final name only once complete, and two savers never take the same name.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from webui.engine.core.infotext import exif_for, pnginfo_for

__all__ = ["save_image", "dated_dir", "next_sequence_number", "keep_source", "find_source", "SOURCES", "SOURCE_HASH"]

# Serialises number picking within this process; other processes are kept out by the
# no-clobber link in _publish.
_SAVE_LOCK = threading.Lock()

_FORMATS: dict[str, str] = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
_LOSSY_QUALITY = 95
_SEQUENCE_RE = re.compile(r"^(\d+)(?=[-.]|$)")
_MAX_ATTEMPTS = 1000
SOURCES = ".inits"  # a job's source pictures (img2img init image, mask), beside that owner's outputs
SOURCE_HASH = 10  # hex digits of a source's sha256 written in the infotext, as for "Model hash"
_HEX = re.compile(r"^[0-9a-f]{6,64}$")


def dated_dir(root: Path, kind: str, when: datetime | None = None) -> Path:
    """`root/kind/YYYY-MM-DD`: one folder per day keeps output folders browsable."""
    when = when or datetime.now()
    return Path(root) / kind / when.strftime("%Y-%m-%d")


def next_sequence_number(directory: Path) -> int:
    """1 + the highest leading number among the folder's files, as AUTOMATIC1111 counts."""
    highest = -1
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    for name in names:
        match = _SEQUENCE_RE.match(name)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def _encode(image: Image.Image, fmt: str, infotext: str, stream: BinaryIO) -> None:
    """Write the image with its infotext: a PNG text chunk, or EXIF UserComment for JPEG/WebP."""
    if fmt == "PNG":
        image.save(stream, format="PNG", pnginfo=pnginfo_for(infotext))
        return
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    elif fmt == "WEBP" and image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    image.save(stream, format=fmt, exif=exif_for(infotext), quality=_LOSSY_QUALITY)


def _publish(temp: Path, final: Path) -> bool:
    """Give the finished temp file its final name unless that name is taken; True on success.

    A hard link fails atomically when the name exists, which also guards against other
    processes; where links are unsupported, fall back to os.replace after an existence check.
    """
    try:
        os.link(temp, final)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return False
        if final.exists():
            return False
        os.replace(temp, final)
        return True
    os.unlink(temp)
    return True


def save_image(
    image: Image.Image,
    directory: Path,
    infotext: str,
    seed: int,
    extension: str = "png",
) -> Path:
    """Save as `NNNNN-seed.ext` in directory, infotext embedded; returns the final path.

    The image is encoded into a hidden temp file in the same folder and only then given its
    final name, so a crash never leaves a half-written image under a real name.
    """
    ext = extension.lower().lstrip(".")
    fmt = _FORMATS.get(ext)
    if fmt is None:
        raise ValueError(f"unsupported image extension {extension!r}; use one of {sorted(_FORMATS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    fd, temp_name = tempfile.mkstemp(prefix=".kiri-", suffix=".tmp", dir=directory)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as stream:
            _encode(image, fmt, infotext, stream)
            stream.flush()
            os.fsync(stream.fileno())
        with _SAVE_LOCK:
            number = next_sequence_number(directory)
            for _ in range(_MAX_ATTEMPTS):
                final = directory / f"{number:05d}-{seed}.{ext}"
                if _publish(temp, final):
                    return final
                number = max(number + 1, next_sequence_number(directory))
        raise FileExistsError(f"no free file name in {directory} after {_MAX_ATTEMPTS} tries")
    finally:
        try:
            temp.unlink()
        except FileNotFoundError:
            pass


def keep_source(image: Image.Image, root: Path) -> str:
    """Keep a source picture (an init image, a mask) once, content-addressed: `root/.inits/<sha256>.png`,
    written whole (temp file, then renamed). Returns the sha256 of the PNG. A dot folder: the Library's
    scan skips it; under the owner's outputs root: only that login (and an admin) may fetch it."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    folder = Path(root) / SOURCES
    target = folder / f"{digest}.png"
    if target.exists():
        return digest
    folder.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=".kiri-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    finally:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
    return digest


def find_source(root: Path, digest: str) -> Path | None:
    """The kept source whose sha256 starts with `digest` (the infotext's 10 hex digits), or None."""
    digest = (digest or "").strip().lower()
    if not _HEX.match(digest):
        return None
    folder = Path(root) / SOURCES
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith(digest) and n.endswith(".png"))
    except OSError:
        return None
    return folder / names[0] if names else None
