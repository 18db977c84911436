"""The detailer (ADetailer's equivalent): after the main pass (and hires fix), find faces, hands or
any named object in each picture and redraw each region at the model's full resolution.

The one public module of the capability. A request carries the detailer in `addons["adetailer"]`
(a DetailerSettings, {units: [...], skip_img2img, show_before}, or ADetailer's script args); on
/sdapi/v1 the "adetailer" AddonSpec reads `alwayson_scripts.ADetailer` through the add-on seam, so the
sdapi mapping needs no edit. The add-on itself does nothing per call (its factory builds none): the
stage is a variant of the txt2img and img2img job kinds, registered before upscale's so it wraps
hires fix and SD upscale:

    request.addons["adetailer"] = {"units": [{"ad_model": "the star", "ad_denoising_strength": 0.5}]}
    engine.txt2img(request)   # main pass, then each region a turn of the queue; Interrupt keeps regions done

Regions come from the segment capability (segment_stage), each is inpainted by generation's
image-to-image task with "only masked" (no denoising code of its own): pixels outside every mask are
exactly the main pass's.

    _units.py    DetailerUnit (ADetailer's ad_* keys), settings, API args, infotext keys
    _regions.py  masks -> regions: split, size filter, k largest, grow/shrink, offset, merge
    _stage.py    the job's stage: detection, one inpaint per region, infotext, saving
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._regions import preprocess, region_prompts, select, split_regions, unit_regions
from ._units import (
    INFOTEXT_FIELDS, MAX_UNITS, MERGE_MODES, NAME, SCRIPT, SEP, VERSION, DetailerSettings, DetailerUnit,
    from_args, plain, settings_from, suffix, unit_from, units_from_infotext,
)

if TYPE_CHECKING:
    from webui.engine.context import Engine
    from webui.engine.registries import Registries

__all__ = ["DetailerUnit", "DetailerSettings", "NAME", "SCRIPT", "VERSION", "MERGE_MODES", "MAX_UNITS", "SEP",
           "settings_from", "from_args", "unit_from", "plain", "suffix", "units_from_infotext", "INFOTEXT_FIELDS",
           "split_regions", "select", "preprocess", "unit_regions", "region_prompts", "ad_models", "check",
           "wants_detailer", "register"]

YOLO_NAMES = ("face_yolov8n.pt", "face_yolov8s.pt", "hand_yolov8n.pt", "person_yolov8n-seg.pt",
              "person_yolov8s-seg.pt", "mediapipe_face_full", "mediapipe_face_short")


def ad_models(engine: "Engine") -> list[str]:
    """What a unit's ad_model can name (GET /adetailer/v1/ad_model): "None", the segmenters that find
    objects by words, and ADetailer's usual file names (found by their word: face, hand, person).
    Any other word or phrase works too."""
    from webui.engine.segment import segmenters

    found = [s.name for s in segmenters(engine) if "text" in s.prompts and s.problem is None]
    return ["None", *found, *YOLO_NAMES]


def wants_detailer(request: Any) -> bool:
    addons = getattr(request, "addons", None)
    return isinstance(addons, dict) and addons.get(NAME) not in (None, False, {}, [])


def check(engine: "Engine", request: Any) -> tuple[DetailerSettings | None, dict]:
    """The request's detailer settings and each enabled unit's detector, refused before the job is queued."""
    from ._stage import detector_for

    settings = settings_from(request.addons.get(NAME))
    if settings is None:
        return None, {}
    detectors = {index: detector_for(engine, unit, f"addons.{NAME}.units[{index}]") for index, unit in settings.active}
    for index, unit in settings.active:
        if unit.ad_use_checkpoint and unit.ad_checkpoint:
            engine.catalog.find(unit.ad_checkpoint)
    return settings, detectors


def _variant(kind: str):
    def work(engine: "Engine", request: Any):
        from ._stage import detail_work, inner_work, kept_as_is

        settings, detectors = check(engine, request)
        if settings is None:  # enabled in name only (every unit off): the plain job
            return inner_work(engine, kind, request, work)
        if kind == "img2img" and settings.skip_img2img:
            inner = kept_as_is(engine, request)
        else:
            inner = inner_work(engine, kind, request, work)
        return detail_work(engine, request, kind, settings, detectors, inner)

    return work


def _from_api_script(title: str, args: Any) -> dict | None:
    settings = from_args(args)
    return plain(settings) if settings is not None else None


def _from_infotext(params: dict[str, str], kept: Any = None) -> dict | None:
    """A detailed picture's ADetailer units from its infotext, as the script's args (the Library's Reproduce)."""
    units = units_from_infotext(params)
    return {SCRIPT: {"args": [True, False, *units]}} if units else None


def register(registries: "Registries") -> None:
    """The "adetailer" add-on (its settings only: it reads alwayson_scripts.ADetailer) and the
    detailer stage as a variant of txt2img and img2img."""
    from webui.engine.core.addons import AddonSpec

    keys = tuple(f"{key}{suffix(i)}" for i in range(MAX_UNITS) for key in INFOTEXT_FIELDS) + ("ADetailer version",)
    registries.add_addon(AddonSpec(NAME, lambda settings: None, keys, api_scripts=(SCRIPT,), from_api_script=_from_api_script,
                                   from_infotext=_from_infotext))
    for kind in ("txt2img", "img2img"):
        registries.extend_job_kind(kind, wants_detailer, _variant(kind))
