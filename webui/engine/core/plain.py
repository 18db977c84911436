"""Requests and results as plain data (JSON-able dicts), so a job can go to a worker in another
process, or a Ray Serve replica, and its result come back.

dump() turns dataclasses into dicts (or what their plain() method gives), PIL images into {"__image__": base64 PNG} and paths into
strings; load(cls, data) builds the dataclass back, validating it as its constructor does.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.limits import DEFAULT_MAX_PIXELS, decode_image

T = TypeVar("T")
IMAGE_KEY = "__image__"


def dump(value: Any, image: Callable[[Any], Any] | None = None, fields: bool = False) -> Any:
    """`value` as plain data; each PIL image becomes `image(picture)` when given (core/results.py
    writes it to a file and gives its path), else {"__image__": base64 PNG}. A result that says how it
    travels to clients (`plain()`: VideoResult) is that, unless `fields`: then every dataclass is its init
    fields, which `load` builds back (a replica's result for its front)."""
    to_plain = getattr(value, "plain", None)
    if callable(to_plain) and not isinstance(value, type) and not fields:
        return dump(to_plain(), image)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: dump(getattr(value, f.name), image, fields) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, dict):
        return {str(k): dump(v, image, fields) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [dump(v, image, fields) for v in value]
    if isinstance(value, Path):
        return str(value)
    if _is_image(value):
        if image is not None:
            return image(value)
        buffer = io.BytesIO()
        value.save(buffer, format="PNG", pnginfo=_text_chunks(value))
        return {IMAGE_KEY: base64.b64encode(buffer.getvalue()).decode()}
    return value


def _text_chunks(image: Any) -> Any:
    """The picture's own text metadata (its infotext, `parameters`), kept in the PNG it travels as."""
    from PIL.PngImagePlugin import PngInfo

    texts = {k: v for k, v in (getattr(image, "info", None) or {}).items() if isinstance(k, str) and isinstance(v, str)}
    if not texts:
        return None
    info = PngInfo()
    for key, text in texts.items():
        info.add_text(key, text)
    return info


def check_fields(cls: type, data: dict, kind: str | None = None, where: str = "request") -> None:
    """Refuse a key that is not an init field of `cls`, naming it (`request.stepz`) with the closest
    field's name: a misspelt key would otherwise run as if it were not there."""
    import difflib

    from webui.engine.core.errors import InvalidRequest

    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; its fields are {', '.join(names)}"
            raise InvalidRequest(f"{where}.{key}", f"{where}.{key} is not a field of {kind or cls.__name__}{hint}")


def load(cls: type[T], data: dict, max_pixels: int = DEFAULT_MAX_PIXELS, kind: str | None = None) -> T:
    """`cls` from plain data; a key it has no field for is refused (check_fields), and every image is
    checked against `max_pixels` (Settings.max_pixels) on its header before it is decoded, refused
    naming its field (core/limits.py)."""
    check_fields(cls, data, kind)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.init and f.name in data:
            kwargs[f.name] = _restore(data[f.name], hints.get(f.name), f.name, max_pixels)
    return cls(**kwargs)


def _restore(value: Any, hint: Any, field: str, max_pixels: int) -> Any:
    if isinstance(value, dict) and set(value) == {IMAGE_KEY}:
        encoded = value[IMAGE_KEY]
        if not isinstance(encoded, str):
            raise InvalidRequest(field, f"{field} must be a base64 string")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(field, f"{field} is not valid base64") from exc
        return decode_image(raw, field, limit=max_pixels)
    if isinstance(value, list):
        inner = typing.get_args(hint)[0] if typing.get_args(hint) else None
        return [_restore(v, inner, field, max_pixels) for v in value]
    if isinstance(value, dict):
        return {k: _restore(v, None, f"{field}.{k}", max_pixels) for k, v in value.items()}
    if isinstance(value, str) and (hint is Path or Path in typing.get_args(hint)):  # Path, or Path | None
        return Path(value)
    return value


def _is_image(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(value, Image.Image)
