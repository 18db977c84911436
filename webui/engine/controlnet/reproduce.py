"""A saved picture's ControlNet units back as sd-webui-controlnet's API args (the Library's Reproduce).

The infotext has a line per unit, ``ControlNet <index>: "Module: canny, Model: name [hash], Weight: 1.0, ..."``
(ControlNets.infotext, and IP-Adapter's shorter one), and Kiri adds the hash of each unit's kept control
picture: ``ControlNet <index> image hash`` (``... image <k> hash`` for an IP-Adapter unit's k-th picture,
``... mask hash`` for its mask). from_infotext turns them into ``{"controlnet": {"args": [unit, ...]}}``, a
unit at its index (disabled placeholders between), its pictures as base64 from the kept copies.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from webui.engine.core.addons import SourceGone
from webui.engine.core.errors import InvalidRequest

__all__ = ["from_infotext", "image_key", "mask_key", "parse_line"]

_LINE = re.compile(r"ControlNet (\d+)")
_FIELDS = {"Module": "module", "Model": "model", "Weight": "weight", "Resize Mode": "resize_mode",
           "Processor Res": "processor_res", "Threshold A": "threshold_a", "Threshold B": "threshold_b",
           "Guidance Start": "guidance_start", "Guidance End": "guidance_end", "Pixel Perfect": "pixel_perfect",
           "Control Mode": "control_mode"}
_NUMBERS = {"weight", "threshold_a", "threshold_b", "guidance_start", "guidance_end"}


def image_key(index: int, k: int = 1) -> str:
    """The infotext key of a unit's k-th kept control picture's hash."""
    return f"ControlNet {index} image hash" if k == 1 else f"ControlNet {index} image {k} hash"


def mask_key(index: int) -> str:
    return f"ControlNet {index} mask hash"


def parse_line(value: str) -> dict[str, Any] | None:
    """One unit's infotext line -> its API unit dict (without pictures); None for a unit that was skipped."""
    found: dict[str, Any] = {}
    for part in str(value).split(", "):
        key, sep, text = part.partition(": ")
        if not sep:
            continue
        key, text = key.strip(), text.strip()
        if key == "Skipped":
            return None
        name = _FIELDS.get(key)
        if name is None:
            continue
        if name in _NUMBERS:
            try:
                number = float(text)
            except ValueError:
                continue
            found[name] = None if name.startswith("threshold") and number == -1 else number
        elif name == "processor_res":
            try:
                found[name] = int(float(text))
            except ValueError:
                continue
        elif name == "pixel_perfect":
            found[name] = text.lower() == "true"
        else:
            found[name] = text
    if "module" not in found and "model" not in found:
        return None
    return {"enabled": True, **found}


def from_infotext(params: dict[str, str], kept: Callable[[str], str | None]) -> dict[str, Any] | None:
    """{"controlnet": {"args": [...]}} for the picture's units (AddonSpec.from_infotext), or None."""
    units: dict[int, dict[str, Any]] = {}
    for key, value in params.items():
        match = _LINE.fullmatch(key)
        if match and (unit := parse_line(value)) is not None:
            units[int(match.group(1))] = unit
    if not units:
        return None
    args: list[dict[str, Any]] = [{"enabled": False} for _ in range(max(units) + 1)]
    for index, unit in sorted(units.items()):
        field = f"alwayson_scripts.controlnet.args[{index}]"
        try:
            pictures = []
            k = 1
            while (picture := kept(image_key(index, k))) is not None:
                pictures.append(picture)
                k += 1
            mask = kept(mask_key(index))
        except SourceGone as gone:
            what = "mask" if "mask" in gone.key else "image"
            raise InvalidRequest(f"{field}.{what}", f"the control picture unit {index} used ({gone.key}: "
                                                    f"{gone.digest[:16]}) is no longer in {gone.where}; the same "
                                                    "picture cannot be made without it") from None
        if pictures:
            unit["image"] = pictures[0] if len(pictures) == 1 else pictures
        if mask is not None:
            unit["mask"] = mask
        args[index] = unit
    return {"controlnet": {"args": args}}
