"""A detailer unit (ADetailer's `ad_*` keys), the settings a request carries in `addons["adetailer"]`,
and how ADetailer's alwayson_scripts args become them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.text import check_text

NAME = "adetailer"
SCRIPT = "ADetailer"
VERSION = "24.11.1"  # the ADetailer release whose API Kiri answers as
MERGE_MODES = ("None", "Merge", "Merge and Invert")
MAX_UNITS = 8
SEP = "[SEP]"
# ADetailer's YOLO/mediapipe files, which Kiri does not read: found by the word they were trained on.
KNOWN_MODELS = {"face": "face", "hand": "hand", "person": "person", "mediapipe_face": "face"}


@dataclass
class DetailerUnit:
    """One ADetailer unit. `ad_model`: a segmenter from models/segmentation/ (then `ad_model_classes`
    says what it finds), ADetailer's file name (face_yolov8n.pt: found by its word, "face"), or a
    word or phrase ("the star"). "None" turns the unit off."""

    ad_model: str = "face_yolov8n.pt"
    ad_model_classes: str = ""
    ad_tab_enable: bool = True
    ad_prompt: str = ""
    ad_negative_prompt: str = ""
    ad_confidence: float = 0.3
    ad_mask_k_largest: int = 0  # 0: all regions
    ad_mask_min_ratio: float = 0.0  # a region's box over the picture's area
    ad_mask_max_ratio: float = 1.0
    ad_dilate_erode: int = 4  # > 0 grows the mask, < 0 shrinks it (pixels)
    ad_x_offset: int = 0
    ad_y_offset: int = 0  # up is positive, as ADetailer
    ad_mask_merge_invert: str = "None"
    ad_mask_blur: int = 4
    ad_denoising_strength: float = 0.4
    ad_inpaint_only_masked: bool = True
    ad_inpaint_only_masked_padding: int = 32
    ad_use_inpaint_width_height: bool = False
    ad_inpaint_width: int = 512
    ad_inpaint_height: int = 512
    ad_use_steps: bool = False
    ad_steps: int = 28
    ad_use_cfg_scale: bool = False
    ad_cfg_scale: float = 7.0
    ad_use_checkpoint: bool = False
    ad_checkpoint: str | None = None
    ad_use_sampler: bool = False
    ad_sampler: str = "DPM++ 2M"
    ad_controlnet_model: str = "None"
    ad_controlnet_module: str = "None"
    ad_controlnet_weight: float = 1.0
    ad_controlnet_guidance_start: float = 0.0
    ad_controlnet_guidance_end: float = 1.0

    @property
    def enabled(self) -> bool:
        return bool(self.ad_tab_enable) and str(self.ad_model).strip() not in ("", "None")


# Keys ADetailer has that Kiri accepts and leaves alone (a warning names them when they ask for something).
ACCEPTED_UNUSED = ("ad_use_vae", "ad_vae", "ad_use_noise_multiplier", "ad_noise_multiplier", "ad_use_clip_skip",
                   "ad_clip_skip", "ad_restore_face", "ad_scheduler", "ad_use_scheduler")
_BOOLS = {f.name for f in fields(DetailerUnit) if f.type in ("bool",)}
_INTS = {f.name for f in fields(DetailerUnit) if f.type in ("int",)}
_FLOATS = {f.name for f in fields(DetailerUnit) if f.type in ("float",)}
_RANGES: dict[str, tuple[float, float]] = {
    "ad_confidence": (0, 1), "ad_mask_k_largest": (0, 100), "ad_mask_min_ratio": (0, 1), "ad_mask_max_ratio": (0, 1),
    "ad_dilate_erode": (-128, 128), "ad_x_offset": (-512, 512), "ad_y_offset": (-512, 512), "ad_mask_blur": (0, 64),
    "ad_denoising_strength": (0, 1), "ad_inpaint_only_masked_padding": (0, 256), "ad_inpaint_width": (64, 2048),
    "ad_inpaint_height": (64, 2048), "ad_steps": (1, 150), "ad_cfg_scale": (0, 30), "ad_controlnet_weight": (0, 2),
    "ad_controlnet_guidance_start": (0, 1), "ad_controlnet_guidance_end": (0, 1),
}


def unit_from(value: Any, where: str, warnings: list[str]) -> DetailerUnit:
    """A unit dict (ADetailer's keys) -> a checked DetailerUnit; bad values name `where.key`."""
    if isinstance(value, DetailerUnit):
        value = {f.name: getattr(value, f.name) for f in fields(DetailerUnit)}
    if not isinstance(value, dict):
        raise InvalidRequest(where, f"{where} must be an object of ADetailer unit settings (ad_model, ad_prompt, ...)")
    known = {f.name for f in fields(DetailerUnit)}
    unknown = [k for k in value if k not in known and k not in ACCEPTED_UNUSED]
    if unknown:
        warnings.append(f"{where}: unknown ADetailer keys not applied: {', '.join(map(repr, unknown[:8]))}")
    asked = [k for k in ACCEPTED_UNUSED if value.get(k) and k.startswith(("ad_use_", "ad_restore"))]
    if asked:
        warnings.append(f"{where}: {', '.join(asked)} not applied (Kiri's detailer uses the main pass's)")
    kwargs: dict[str, Any] = {}
    for key, raw in value.items():
        if key not in known:
            continue
        name = f"{where}.{key}"
        if key in _BOOLS:
            if not isinstance(raw, bool):
                raise InvalidRequest(name, f"{name} must be true or false (got {raw!r})")
        elif key in _INTS or key in _FLOATS:
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
                raise InvalidRequest(name, f"{name} must be a number (got {raw!r})")
            if key in _INTS:
                if raw != int(raw):
                    raise InvalidRequest(name, f"{name} must be a whole number (got {raw!r})")
                raw = int(raw)
            else:
                raw = float(raw)
            low, high = _RANGES.get(key, (-math.inf, math.inf))
            if not low <= raw <= high:
                raise InvalidRequest(name, f"{name} must be between {low:g} and {high:g} (got {raw!r})")
        elif key == "ad_checkpoint":
            if raw is not None and not isinstance(raw, str):
                raise InvalidRequest(name, f"{name} must be a checkpoint name")
        else:
            if not isinstance(raw, str):
                raise InvalidRequest(name, f"{name} must be text (got {type(raw).__name__})")
            check_text(name, raw)
        kwargs[key] = raw
    unit = DetailerUnit(**kwargs)
    if unit.ad_mask_merge_invert not in MERGE_MODES:
        raise InvalidRequest(f"{where}.ad_mask_merge_invert",
                             f"ad_mask_merge_invert must be one of {', '.join(MERGE_MODES)} (got {unit.ad_mask_merge_invert!r})")
    if unit.ad_mask_min_ratio > unit.ad_mask_max_ratio:
        raise InvalidRequest(f"{where}.ad_mask_min_ratio", "ad_mask_min_ratio must not be above ad_mask_max_ratio")
    if unit.ad_use_inpaint_width_height and (unit.ad_inpaint_width % 8 or unit.ad_inpaint_height % 8):
        raise InvalidRequest(f"{where}.ad_inpaint_width", "ad_inpaint_width and ad_inpaint_height must be multiples of 8")
    return unit


@dataclass
class DetailerSettings:
    """What a request's `addons["adetailer"]` holds once checked."""

    units: list[DetailerUnit] = field(default_factory=list)
    skip_img2img: bool = False  # img2img: keep the init image as it is, run only the detailer
    show_before: bool = False  # the UI's before/after view: the main pass follows each detailed picture
    warnings: list[str] = field(default_factory=list)

    @property
    def active(self) -> list[tuple[int, DetailerUnit]]:
        return [(i, u) for i, u in enumerate(self.units) if u.enabled]


def settings_from(value: Any, where: str = "addons.adetailer") -> DetailerSettings | None:
    """A request's addons["adetailer"] (a DetailerSettings, a dict {units, skip_img2img, show_before} or
    ADetailer's args list) -> checked settings, None when it asks for nothing."""
    if value is None or value is False:
        return None
    if isinstance(value, DetailerSettings):
        return value
    if isinstance(value, (list, tuple)):
        return from_args(list(value), where)
    if not isinstance(value, dict):
        raise InvalidRequest(where, f"{where} must be the detailer's settings: {{units: [...], skip_img2img}}")
    warnings = list(value.get("warnings") or [])
    units_in = value.get("units", [])
    if not isinstance(units_in, list) or len(units_in) > MAX_UNITS:
        raise InvalidRequest(f"{where}.units", f"units must be a list of at most {MAX_UNITS} unit objects")
    units = [unit_from(u, f"{where}.units[{i}]", warnings) for i, u in enumerate(units_in)]
    for key in ("skip_img2img", "show_before"):
        if not isinstance(value.get(key, False), bool):
            raise InvalidRequest(f"{where}.{key}", f"{key} must be true or false")
    settings = DetailerSettings(units, bool(value.get("skip_img2img", False)), bool(value.get("show_before", False)), warnings)
    return settings if settings.active else None


def from_args(args: Any, where: str = f"alwayson_scripts.{SCRIPT}.args") -> DetailerSettings | None:
    """ADetailer's script args: `[enable, skip_img2img, {unit}, ...]` or the older `[{unit}, ...]`."""
    if isinstance(args, dict):
        args = [args]
    if not isinstance(args, list):
        raise InvalidRequest(where, f"{where} must be a list: [enable, skip_img2img, {{unit}}, ...]")
    enable, skip, start = True, False, 0
    if args and isinstance(args[0], bool):
        enable, start = args[0], 1
        if len(args) > 1 and isinstance(args[1], bool):
            skip, start = args[1], 2
    if not enable:
        return None
    warnings: list[str] = []
    units = []
    for index in range(start, len(args)):
        if len(units) >= MAX_UNITS:
            raise InvalidRequest(f"{where}[{index}]", f"at most {MAX_UNITS} ADetailer units")
        units.append(unit_from(args[index], f"{where}[{index}]", warnings))
    settings = DetailerSettings(units, skip, False, warnings)
    return settings if settings.active else None


def plain(settings: DetailerSettings) -> dict:
    """The settings as plain data (a job sent to a worker): the dict settings_from reads back."""
    return {"units": [{f.name: getattr(u, f.name) for f in fields(DetailerUnit)} for u in settings.units],
            "skip_img2img": settings.skip_img2img, "show_before": settings.show_before, "warnings": list(settings.warnings)}


# --- infotext -------------------------------------------------------------------------------------

def suffix(index: int) -> str:
    """ADetailer's key suffix for unit `index` (0-based): "", " 2nd", " 3rd", " 4th", ..."""
    if index == 0:
        return ""
    n = index + 1
    ordinal = {1: "st", 2: "nd", 3: "rd"}.get(n % 10 if n % 100 not in (11, 12, 13) else 0, "th")
    return f" {n}{ordinal}"


def unit_infotext(index: int, unit: DetailerUnit, regions: int) -> dict[str, object]:
    s = suffix(index)
    params: dict[str, object] = {
        f"ADetailer model{s}": unit.ad_model,
        f"ADetailer model classes{s}": unit.ad_model_classes or None,
        f"ADetailer prompt{s}": unit.ad_prompt or None,
        f"ADetailer negative prompt{s}": unit.ad_negative_prompt or None,
        f"ADetailer confidence{s}": unit.ad_confidence,
        f"ADetailer mask only top k largest{s}": unit.ad_mask_k_largest or None,
        f"ADetailer mask min ratio{s}": unit.ad_mask_min_ratio or None,
        f"ADetailer mask max ratio{s}": unit.ad_mask_max_ratio if unit.ad_mask_max_ratio != 1 else None,
        f"ADetailer x offset{s}": unit.ad_x_offset or None,
        f"ADetailer y offset{s}": unit.ad_y_offset or None,
        f"ADetailer dilate erode{s}": unit.ad_dilate_erode,
        f"ADetailer mask merge invert{s}": unit.ad_mask_merge_invert if unit.ad_mask_merge_invert != "None" else None,
        f"ADetailer mask blur{s}": unit.ad_mask_blur,
        f"ADetailer denoising strength{s}": unit.ad_denoising_strength,
        f"ADetailer inpaint only masked{s}": unit.ad_inpaint_only_masked,
        f"ADetailer inpaint padding{s}": unit.ad_inpaint_only_masked_padding,
        f"ADetailer use inpaint width height{s}": True if unit.ad_use_inpaint_width_height else None,
        f"ADetailer inpaint width{s}": unit.ad_inpaint_width if unit.ad_use_inpaint_width_height else None,
        f"ADetailer inpaint height{s}": unit.ad_inpaint_height if unit.ad_use_inpaint_width_height else None,
        f"ADetailer use separate steps{s}": True if unit.ad_use_steps else None,
        f"ADetailer steps{s}": unit.ad_steps if unit.ad_use_steps else None,
        f"ADetailer use separate CFG scale{s}": True if unit.ad_use_cfg_scale else None,
        f"ADetailer CFG scale{s}": unit.ad_cfg_scale if unit.ad_use_cfg_scale else None,
        f"ADetailer use separate checkpoint{s}": True if unit.ad_use_checkpoint else None,
        f"ADetailer checkpoint{s}": unit.ad_checkpoint if unit.ad_use_checkpoint else None,
        f"ADetailer use separate sampler{s}": True if unit.ad_use_sampler else None,
        f"ADetailer sampler{s}": unit.ad_sampler if unit.ad_use_sampler else None,
        f"ADetailer ControlNet model{s}": unit.ad_controlnet_model if unit.ad_controlnet_model != "None" else None,
        f"ADetailer ControlNet module{s}": unit.ad_controlnet_module if unit.ad_controlnet_model != "None" else None,
        f"ADetailer ControlNet weight{s}": unit.ad_controlnet_weight if unit.ad_controlnet_model != "None" else None,
        # Kiri's note: how many regions the unit found and redrew (0: the picture is as the main pass left it)
        f"ADetailer regions{s}": regions,
    }
    return params


# infotext key (without suffix) -> unit field, for PNG info's way back
INFOTEXT_FIELDS = {
    "ADetailer model": "ad_model", "ADetailer model classes": "ad_model_classes", "ADetailer prompt": "ad_prompt",
    "ADetailer negative prompt": "ad_negative_prompt", "ADetailer confidence": "ad_confidence",
    "ADetailer mask only top k largest": "ad_mask_k_largest", "ADetailer mask min ratio": "ad_mask_min_ratio",
    "ADetailer mask max ratio": "ad_mask_max_ratio", "ADetailer x offset": "ad_x_offset",
    "ADetailer y offset": "ad_y_offset", "ADetailer dilate erode": "ad_dilate_erode",
    "ADetailer mask merge invert": "ad_mask_merge_invert", "ADetailer mask blur": "ad_mask_blur",
    "ADetailer denoising strength": "ad_denoising_strength", "ADetailer inpaint only masked": "ad_inpaint_only_masked",
    "ADetailer inpaint padding": "ad_inpaint_only_masked_padding",
    "ADetailer use inpaint width height": "ad_use_inpaint_width_height", "ADetailer inpaint width": "ad_inpaint_width",
    "ADetailer inpaint height": "ad_inpaint_height", "ADetailer use separate steps": "ad_use_steps",
    "ADetailer steps": "ad_steps", "ADetailer use separate CFG scale": "ad_use_cfg_scale",
    "ADetailer CFG scale": "ad_cfg_scale", "ADetailer use separate checkpoint": "ad_use_checkpoint",
    "ADetailer checkpoint": "ad_checkpoint", "ADetailer use separate sampler": "ad_use_sampler",
    "ADetailer sampler": "ad_sampler", "ADetailer ControlNet model": "ad_controlnet_model",
    "ADetailer ControlNet module": "ad_controlnet_module", "ADetailer ControlNet weight": "ad_controlnet_weight",
}


def units_from_infotext(params: dict[str, str]) -> list[dict[str, Any]]:
    """A parsed infotext's params -> the unit dicts it records (ADetailer's keys, values typed)."""
    defaults = DetailerUnit()
    units: list[dict[str, Any]] = []
    for index in range(MAX_UNITS):
        s = suffix(index)
        if f"ADetailer model{s}" not in params:
            break
        unit: dict[str, Any] = {}
        for key, name in INFOTEXT_FIELDS.items():
            raw = params.get(key + s)
            if raw is None:
                continue
            kind = type(getattr(defaults, name))
            try:
                if kind is bool:
                    value: Any = str(raw).strip().lower() == "true"
                elif kind is int:
                    value = int(float(raw))
                elif kind is float:
                    value = float(raw)
                else:
                    value = str(raw)
            except ValueError:
                continue
            unit[name] = value
        units.append(unit)
    return units
