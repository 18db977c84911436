"""ControlNet units as a request gives them (A1111 / sd-webui-controlnet keys), checked and decoded.

    {"enabled": true, "image": <PIL | numpy | base64>, "mask": ..., "module": "canny", "model": "name [hash]",
     "weight": 1.0, "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": 0 | "Balanced" | ...,
     "resize_mode": 1 | "Crop and Resize" | ..., "processor_res": 512, "threshold_a": 100, "threshold_b": 200,
     "pixel_perfect": false}

A unit keeps its index in the request (its infotext line is "ControlNet {index}"); a field that does not
parse is an InvalidRequest naming e.g. `controlnet[1].weight` (from the API:
`alwayson_scripts.controlnet.args[1].weight`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from webui.engine.core.errors import InvalidRequest

__all__ = ["CONTROL_MODES", "RESIZE_MODES", "ControlUnit", "is_ip_adapter", "parse_units"]

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
# sd-webui-controlnet's older and internal spellings
_RESIZE_ALIASES = {"envelope": 2, "inner_fit": 1, "outer_fit": 2, "just_resize": 0, "resize": 0, "scale to fit (inner fit)": 1,
                   "envelope (outer fit)": 2, "crop_and_resize": 1, "resize_and_fill": 2}
MAX_WEIGHT = 10.0
MAX_PROCESSOR_RES = 4096


@dataclass
class ControlUnit:
    """One enabled-or-not unit, its values checked; `image`/`mask` decoded to RGB / L PIL images (or None)."""

    index: int = 0
    enabled: bool = True
    image: Any = None
    mask: Any = None
    module: str = "none"
    model: str = ""
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: int = 0
    resize_mode: int = 1
    processor_res: int = 512
    threshold_a: float | None = None
    threshold_b: float | None = None
    pixel_perfect: bool = False
    hr_option: str = "Both"
    extra: dict[str, Any] = field(default_factory=dict)  # keys Kiri does not read, as sent

    @property
    def control_mode_name(self) -> str:
        return CONTROL_MODES[self.control_mode]

    @property
    def resize_mode_name(self) -> str:
        return RESIZE_MODES[self.resize_mode]

    @property
    def model_name(self) -> str:
        """The model's name without A1111's " [hash]" suffix."""
        return model_name(self.model)

    def with_(self, **changes: Any) -> "ControlUnit":
        return replace(self, **changes)


def model_name(title: str) -> str:
    text = (title or "").strip()
    if text.endswith("]") and " [" in text:
        text = text[: text.rindex(" [")]
    return text.strip()


def is_ip_adapter(module: Any) -> bool:
    """Units the ip_adapter add-on reads from the same script (its modules start with "ip-adapter")."""
    return isinstance(module, str) and module.strip().lower().replace("_", "-").startswith("ip-adapter")


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise InvalidRequest(where, f"{where} must be true or false (got {value!r})")


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool):
        raise InvalidRequest(where, f"{where} must be a number (got {value!r})")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(where, f"{where} must be a number (got {value!r})") from None
    if number != number or not low <= number <= high:
        raise InvalidRequest(where, f"{where} must be a number from {low:g} to {high:g} (got {value!r})")
    return number


def _mode(value: Any, names: tuple[str, ...], where: str, aliases: dict[str, int] | None = None) -> int:
    if isinstance(value, bool):
        raise InvalidRequest(where, f"{where} must be one of {', '.join(names)} or 0-{len(names) - 1} (got {value!r})")
    if isinstance(value, (int, float)) and float(value).is_integer() and 0 <= int(value) < len(names):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and int(text) < len(names):
            return int(text)
        for i, name in enumerate(names):
            if text.lower() == name.lower():
                return i
        if aliases and text.lower() in aliases:
            return aliases[text.lower()]
    raise InvalidRequest(where, f"{where} must be one of {', '.join(names)} (or 0-{len(names) - 1}; got {value!r})")


def decode(value: Any, where: str, mode: str = "RGB") -> Any:
    """A unit's image as sent (PIL image, numpy array, base64 text or data URL, {"image": ...}) -> PIL image
    in `mode`, its size checked against the pixel budget before decoding; None for nothing."""
    from PIL import Image

    from webui.engine.core.limits import base64_bytes, check_input, decode_image

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dict):  # sd-webui-controlnet's {"image": b64, "mask": b64}
        value = value.get("image")
        return decode(value, where, mode)
    if isinstance(value, Image.Image):
        check_input(where, value.width, value.height)
        return value.convert(mode)
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            array = value
            if array.dtype != np.uint8:
                array = np.clip(array * (255 if array.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
            if array.ndim == 3 and array.shape[2] == 4:
                array = array[..., :3]
            if array.ndim not in (2, 3):
                raise InvalidRequest(where, f"{where} must be an HxW or HxWxC image (got shape {array.shape})")
            check_input(where, array.shape[1], array.shape[0])
            return Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[2] == 1 else array).convert(mode)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if isinstance(value, (bytes, bytearray)):
        return decode_image(bytes(value), where).convert(mode)
    if isinstance(value, str):
        return decode_image(base64_bytes(value, where), where).convert(mode)
    raise InvalidRequest(where, f"{where} must be an image (base64 text, a PIL image or an array; got {type(value).__name__})")


def parse_unit(value: Any, index: int, where: str) -> ControlUnit:
    """One unit dict (or a ControlUnit) -> a checked ControlUnit with its images decoded."""
    if isinstance(value, ControlUnit):
        return value if value.index == index else value.with_(index=index)
    if hasattr(value, "to_dict") and callable(value.to_dict):  # webuiapi's ControlNetUnit, handed in-process
        value = value.to_dict()
    if not isinstance(value, dict):
        raise InvalidRequest(where, f"{where} must be an object of unit settings (enabled, image, module, model, ...); got {value!r}")
    known = {"enabled", "image", "input_image", "mask", "module", "model", "weight", "guidance_start", "guidance_end",
             "control_mode", "guessmode", "resize_mode", "processor_res", "threshold_a", "threshold_b", "pixel_perfect",
             "hr_option", "low_vram", "is_ui"}
    unit = ControlUnit(index=index, extra={k: v for k, v in value.items() if k not in known})
    unit.enabled = _bool(value.get("enabled", True), f"{where}.enabled")
    image = value.get("image", value.get("input_image"))
    mask = value.get("mask")
    if isinstance(image, dict) and mask is None:
        mask = image.get("mask")
    module = value.get("module", "none")
    unit.module = "none" if module in (None, "") else str(module).strip()
    model = value.get("model", "")
    unit.model = "" if model in (None, "None", "none") else str(model).strip()
    unit.weight = _number(value.get("weight", 1.0), f"{where}.weight", 0.0, MAX_WEIGHT)
    unit.guidance_start = _number(value.get("guidance_start", 0.0), f"{where}.guidance_start", 0.0, 1.0)
    unit.guidance_end = _number(value.get("guidance_end", 1.0), f"{where}.guidance_end", 0.0, 1.0)
    if unit.guidance_end < unit.guidance_start:
        raise InvalidRequest(f"{where}.guidance_end", f"{where}.guidance_end ({unit.guidance_end:g}) must not be before "
                                                      f"guidance_start ({unit.guidance_start:g})")
    mode = value.get("control_mode")
    if mode is None and value.get("guessmode"):
        mode = 2
    unit.control_mode = _mode(0 if mode is None else mode, CONTROL_MODES, f"{where}.control_mode")
    unit.resize_mode = _mode(value.get("resize_mode", 1), RESIZE_MODES, f"{where}.resize_mode", _RESIZE_ALIASES)
    res = value.get("processor_res", 512)
    unit.processor_res = 512 if res in (None, -1) else int(_number(res, f"{where}.processor_res", 64, MAX_PROCESSOR_RES))
    for name in ("threshold_a", "threshold_b"):
        raw = value.get(name)
        setattr(unit, name, None if raw in (None, -1) else _number(raw, f"{where}.{name}", -1e6, 1e6))
    unit.pixel_perfect = _bool(value.get("pixel_perfect", False), f"{where}.pixel_perfect")
    hr = value.get("hr_option", "Both")
    unit.hr_option = str(hr) if hr is not None else "Both"
    if unit.enabled:  # a disabled unit's pictures are not decoded (nor refused)
        unit.image = decode(image, f"{where}.image", "RGB")
        unit.mask = decode(mask, f"{where}.mask", "L")
    return unit


def parse_units(value: Any, field: str = "controlnet") -> list[ControlUnit]:
    """A request's ControlNet settings (a list of unit dicts, one dict, or ControlUnits) -> its ControlNet units,
    each with its index in the list; units of the ip_adapter add-on (module "ip-adapter...") are left out
    (their indices stay taken). Errors name `{field}[i].key`."""
    if value is None or value is False or value == [] or value == {}:
        return []
    if isinstance(value, dict) and "args" in value and isinstance(value["args"], list):
        value = value["args"]
    if isinstance(value, (dict, ControlUnit)) or hasattr(value, "to_dict"):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise InvalidRequest(field, f"{field} must be a list of units (got {type(value).__name__})")
    units = []
    for i, item in enumerate(value):
        module = item.module if isinstance(item, ControlUnit) else item.get("module") if isinstance(item, dict) else None
        if is_ip_adapter(module):
            continue
        units.append(parse_unit(item, i, f"{field}[{i}]"))
    return units
