"""Preview pictures of model files (checkpoints, LoRAs, embeddings...): the picture beside a file that
AUTOMATIC1111's extra-network cards show, `<name>.preview.png` (also `<name>.png`, `.jpg`, `.webp`).

`preview_of` finds one; `set_preview` writes `<name>.preview.png` from a picture, atomically (a temp
file in the same folder, then a rename, so a card never reads half a file), and only beside a file
that lies in one of the catalog's kinds' folders (links resolved): a path elsewhere, or a source that
is not a picture, is an InvalidRequest. Shared by every kind, so it imports no capability.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from webui.engine.core.errors import InvalidRequest

__all__ = ["PREVIEW_SUFFIXES", "model_folders", "preview_of", "preview_target", "set_preview"]

PREVIEW_SUFFIXES = (".preview.png", ".png", ".preview.jpg", ".jpg", ".preview.webp", ".webp", ".jpeg")
MAX_SIDE = 1024  # a card needs no bigger picture; larger results are scaled down when saved


def _base(path: Path) -> Path:
    """`<folder>/<name>` of a model: a file without its extension, a diffusers folder as it is."""
    return path if path.is_dir() else path.with_suffix("")


def preview_of(path: Path | str) -> Path | None:
    """The picture beside a model file or folder, as A1111's cards read it, or None."""
    base = _base(Path(path))
    for suffix in PREVIEW_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def model_folders(catalog: Any) -> list[Path]:
    """Every folder the catalog scans for any kind (models/checkpoints, models/Lora, embeddings, ...), resolved."""
    folders = []
    for kind in catalog.kinds.values():
        for folder in kind.folders:
            directory = Path(catalog.models_dir) / folder
            if directory.is_dir():
                folders.append(directory.resolve())
    return folders


def preview_target(catalog: Any, model_path: Path | str) -> Path:
    """Where `model_path`'s preview goes (`<name>.preview.png` beside it); InvalidRequest("model") when the
    path is not a model file or folder inside the catalog's folders."""
    path = Path(model_path)
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InvalidRequest("model", f"{path.name} is not a model file") from None
    # the file itself may be a link into a shared store: its folder, not its target, must be a models folder
    parent = path.absolute().parent.resolve()
    inside = any(parent == folder or folder in parent.parents for folder in model_folders(catalog))
    if not inside or resolved.name.startswith("."):
        raise InvalidRequest("model", f"{path.name} is not in a models folder; previews are written only there")
    if path.is_file() and path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        raise InvalidRequest("model", f"{path.name} is a picture, not a model")
    base = path.absolute().parent / (path.name if path.is_dir() else path.stem)
    return base.with_name(base.name + ".preview.png")


def set_preview(catalog: Any, model_path: Path | str, picture: Any) -> Path:
    """Write `picture` (a PIL image, or the path of a picture file) as `model_path`'s `<name>.preview.png`,
    atomically; returns the preview's path. Refuses paths outside the models folders and non-pictures."""
    from PIL import Image, UnidentifiedImageError

    target = preview_target(catalog, model_path)
    if isinstance(picture, (str, Path)):
        try:
            with Image.open(picture) as opened:
                opened.load()
                image = opened.copy()
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            raise InvalidRequest("image", f"{Path(picture).name} is not a picture") from None
    elif isinstance(picture, Image.Image):
        image = picture.copy()
    else:
        raise InvalidRequest("image", "no picture to use as the preview")
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            image.save(out, format="PNG")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return target
