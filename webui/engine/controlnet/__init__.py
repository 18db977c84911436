"""ControlNet and T2I-Adapter: guide generation with a control map (edges, scribbles, depth, poses), as
the add-on "controlnet", with sd-webui-controlnet's unit settings, infotext and API.

A request names units (A1111's keys; units.py):

    {"controlnet": [{"enabled": true, "image": <PIL | numpy | base64>, "module": "canny",
                     "model": "name [hash]", "weight": 1.0, "guidance_start": 0.0, "guidance_end": 1.0,
                     "control_mode": "Balanced", "resize_mode": "Crop and Resize", "processor_res": 512,
                     "threshold_a": 100, "threshold_b": 200, "pixel_perfect": false}, ...]}

and /sdapi/v1/txt2img and /img2img read the same units from `alwayson_scripts.controlnet.args` (units whose
module starts with "ip-adapter" belong to the ip_adapter add-on and are left to it).

Lifetimes (core/addons.py): when built, unknown modules and models are refused naming the available ones;
per job, each model is read once through the model manager (loader "controlnet", files.py) and one of
another family than the checkpoint's is refused naming both; per model, the ControlNets moved to the
checkpoint's device and dtype (kept with it, counted in the memory budget); per call, the maps are made
(preprocessed, then fitted to the call's size by the unit's resize mode) and the pipeline's kwargs set.
The checkpoint is never changed: the resolver builds the ControlNet variant of its pipeline from the same
components (generation/pipelines.py).
"""

from __future__ import annotations

from typing import Any

from .units import CONTROL_MODES, RESIZE_MODES, ControlUnit, is_ip_adapter, parse_units

__all__ = ["CONTROL_MODES", "INFOTEXT_KEYS", "NAME", "RESIZE_MODES", "SETTING", "ControlUnit", "is_ip_adapter",
           "list_models", "module_detail", "module_names", "parse_units", "preview", "register", "unit_count"]

NAME = "controlnet"
SETTING = "control_net_unit_count"
DEFAULT_UNIT_COUNT = 3
MAX_UNIT_COUNT = 10
INFOTEXT_KEYS = tuple(f"ControlNet {i}" for i in range(MAX_UNIT_COUNT * 2))


def unit_count(settings: Any) -> int:
    """How many units the UI shows (A1111's control_net_unit_count setting; 3 by default)."""
    try:
        value = int(getattr(settings, SETTING, DEFAULT_UNIT_COUNT))
    except (TypeError, ValueError):
        return DEFAULT_UNIT_COUNT
    return min(max(value, 1), MAX_UNIT_COUNT)


def list_models(catalog: Any, family: str | None = None) -> list[dict]:
    """Every ControlNet / T2I-Adapter as `{name, title: "name [hash8]", family, kind}` (kind "controlnet" or
    "t2i"); with `family`, those that fit it (and those whose family is unknown)."""
    from .files import model_type

    out = []
    for entry in catalog.of_kind(NAME):
        if family is not None and entry.family not in (None, family):
            continue
        out.append({"name": entry.name, "title": title(catalog, entry), "family": entry.family, "kind": model_type(entry)})
    return out


def title(catalog: Any, entry: Any) -> str:
    """"name [hash8]" as sd-webui-controlnet lists a model (the hash of the weights file, or the folder's)."""
    from .addon import short_hash

    return f"{entry.name} [{short_hash(entry)}]"


def module_names() -> list[str]:
    """The preprocessors a unit may name ("none" first)."""
    from .addon import preprocessors

    names = list(preprocessors().names())
    return names if "none" in names else ["none", *names]


def module_detail() -> dict:
    """sd-webui-controlnet's module_detail (each preprocessor's sliders), from the preprocessor registry."""
    from .addon import preprocessors

    try:
        return dict(preprocessors().detail())
    except Exception:  # noqa: BLE001 - a listing must not fail on one preprocessor's description
        return {}


def preview(module: str, image: Any, resolution: int = 512, threshold_a: float | None = None,
            threshold_b: float | None = None, mask: Any = None, catalog: Any = None) -> Any:
    """The control map `module` makes of `image` (PIL, numpy or base64), as an HxWx3 uint8 array at the
    image's size: the UI's preview and /controlnet/detect."""
    from .addon import run_preprocessor
    from .units import decode

    picture = decode(image, "image", "RGB")
    if picture is None:
        from webui.engine.core.errors import InvalidRequest

        raise InvalidRequest("image", "there is no image to preprocess")
    return run_preprocessor(module, picture, resolution, threshold_a, threshold_b,
                            mask=decode(mask, "mask", "L"), catalog=catalog)


def register(registries: Any) -> None:
    """Called by bootstrap.build_registries: the "controlnet" model kind (models/ControlNet/,
    models/controlnet/, models/T2I-Adapter/), its loader, and the add-on (which reads A1111's
    alwayson_scripts "controlnet")."""
    from webui.engine.core.addons import AddonSpec
    from webui.engine.models.catalog import ModelKind

    from .addon import ControlNets, from_api_script
    from .files import FOLDERS, describe_controlnet, load_control_model
    from .reproduce import from_infotext

    registries.add_model_kind(ModelKind(NAME, FOLDERS, describe_controlnet, "ControlNet"))
    registries.add_loader(NAME, load_control_model)
    registries.add_addon(AddonSpec(NAME, ControlNets.from_settings, INFOTEXT_KEYS, api_scripts=("controlnet",),
                                   from_api_script=from_api_script, from_infotext=from_infotext))
