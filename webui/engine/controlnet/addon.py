"""The "controlnet" add-on: a job's units, through the add-on lifetimes (see the package's docstring)."""

from __future__ import annotations

import hashlib
import logging
import re
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from webui.engine.core.addons import Addon
from webui.engine.core.errors import InvalidRequest

from .files import KIND, ControlModel, family_label, model_type
from .reproduce import image_key, mask_key
from .units import ControlUnit, is_ip_adapter, parse_units

log = logging.getLogger(__name__)

API_FIELD = "alwayson_scripts.controlnet.args"
SOFT_BASE = 0.825  # A1111's "My prompt is more important": residual i of n scaled 0.825 ** (n - 1 - i)


class UnitList(list):
    """Units already parsed, with the field their errors name (the API's args)."""

    field: str = "controlnet"


def from_api_script(title: str, args: Any) -> Any:
    """AddonSpec.from_api_script: `alwayson_scripts.controlnet.args` -> this add-on's units (None when no unit
    is a ControlNet one: IP-Adapter units are the ip_adapter add-on's)."""
    units = UnitList(parse_units(args, API_FIELD))
    units.field = API_FIELD
    return units if any(unit.enabled for unit in units) else None


# --- preprocessors ---------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def preprocessors() -> Any:
    """The preprocessor registry (preprocess/: sd-webui-controlnet's module names)."""
    from .preprocess import Preprocessors, builtin_preprocessors

    return Preprocessors(builtin_preprocessors())


def module_known(name: str) -> bool:
    return name in ("none", "None", "") or name in preprocessors()


def _services(catalog: Any, device: str = "cpu"):
    """services(kind) -> the annotator model folder a preprocessor needs (models/annotators/<kind>/, the
    folder itself or its first model folder), or None."""
    root = Path(getattr(catalog, "models_dir", "models")) / "annotators"

    def services(kind: str) -> Path | None:
        folder = root / kind
        if (folder / "config.json").is_file():
            return folder
        if folder.is_dir():
            found = sorted(p for p in folder.iterdir() if (p / "config.json").is_file())
            return found[0] if found else None
        return None

    services.device = device  # type: ignore[attr-defined]
    return services


def run_preprocessor(module: str, image: Any, resolution: int = 512, threshold_a: float | None = None,
                     threshold_b: float | None = None, *, mask: Any = None, catalog: Any = None, field: str = "module") -> Any:
    """`module`'s map of the PIL `image` as an HxWx3 uint8 array at the image's size ("none": the image)."""
    import numpy as np

    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if module in ("none", "None", ""):
        return array.copy()
    if not module_known(module):
        raise InvalidRequest(field, f"unknown ControlNet preprocessor {module!r}; available: {', '.join(_module_list())}")
    mask_array = np.asarray(mask.convert("L"), dtype=np.uint8) if mask is not None else None
    try:
        out = preprocessors().run(module, array, int(resolution), threshold_a, threshold_b, mask=mask_array,
                                  services=_services(catalog))
    except InvalidRequest as exc:
        if exc.field == "module":
            raise InvalidRequest(field, str(exc)) from None
        raise
    out = np.asarray(out)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return out.astype(np.uint8)


def _module_list() -> list[str]:
    names = list(preprocessors().names())
    return names if "none" in names else ["none", *names]


# --- maps fitted to the call's size -----------------------------------------------------------------

def fit(image: Any, width: int, height: int, resize_mode: int) -> Any:
    """A PIL map at width x height: 0 Just Resize (stretch), 1 Crop and Resize (cover, centre crop),
    2 Resize and Fill (fit inside, the rest black: no control there). An aspect mismatch is never an error."""
    from PIL import Image

    if image.size == (width, height):
        return image
    if resize_mode == 0:
        return image.resize((width, height), Image.LANCZOS)
    w, h = image.size
    scale = max(width / w, height / h) if resize_mode == 1 else min(width / w, height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    scaled = image.resize(size, Image.LANCZOS)
    if resize_mode == 1:
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    canvas = Image.new(image.mode, (width, height), 0)
    canvas.paste(scaled, ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas


# --- hashes, as sd-webui-controlnet titles models ---------------------------------------------------

def _weights_file(entry: Any) -> Path | None:
    path = entry.path
    if path.is_file():
        return path
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.safetensors"))
    return found[0] if found else None


@lru_cache(maxsize=256)
def _model_hash(path: str, size: int, mtime: float) -> str:
    """A1111's old model hash (sd-webui-controlnet's titles): sha256 of 64 KiB at 1 MiB, 8 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(0x100000)
        digest.update(f.read(0x10000))
    return digest.hexdigest()[:8]


def short_hash(entry: Any) -> str:
    path = _weights_file(entry)
    if path is None:
        return "00000000"
    stat = path.stat()
    return _model_hash(str(path), stat.st_size, stat.st_mtime)


# --- the add-on --------------------------------------------------------------------------------------

def _find(catalog: Any, unit: ControlUnit, where: str) -> Any:
    name = unit.model_name
    entry = catalog.find_of_kind(KIND, name)
    if entry is None:
        catalog.scan()
        entry = catalog.find_of_kind(KIND, name)
    if entry is None:
        titles = [f"{e.name} [{short_hash(e)}]" for e in catalog.of_kind(KIND)]
        raise InvalidRequest(where, f"unknown ControlNet model {unit.model!r}; available: "
                                    f"{', '.join(titles) or '(none: put ControlNet models in models/ControlNet/)'}")
    return entry


class _SoftMulti:
    """Built lazily: a MultiControlNetModel subclass (the pipelines test isinstance) whose nets' residuals may
    be scaled per call (A1111's soft weighting), set in apply() and reset in release()."""

    cls = None

    @classmethod
    def get(cls) -> Any:
        if cls.cls is None:
            from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

            class KiriMultiControlNet(MultiControlNetModel):
                """The units' ControlNets for one call; `soft[i]` scales net i's residuals as A1111's
                "My prompt is more important" does. The nets are the loaded ones, not copies."""

                def __init__(self, controlnets: list) -> None:
                    super().__init__(controlnets)
                    self.soft = [False] * len(controlnets)

                def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale,
                            class_labels=None, timestep_cond=None, attention_mask=None, added_cond_kwargs=None,
                            cross_attention_kwargs=None, guess_mode=False, return_dict=True):
                    down_total = mid_total = None
                    for i, (image, scale, net) in enumerate(zip(controlnet_cond, conditioning_scale, self.nets)):
                        down, mid = net(sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                                        controlnet_cond=image, conditioning_scale=scale, class_labels=class_labels,
                                        timestep_cond=timestep_cond, attention_mask=attention_mask,
                                        added_cond_kwargs=added_cond_kwargs, cross_attention_kwargs=cross_attention_kwargs,
                                        guess_mode=guess_mode, return_dict=False)
                        if i < len(self.soft) and self.soft[i]:
                            n = len(down) + 1
                            down = [d * (SOFT_BASE ** (n - 1 - j)) for j, d in enumerate(down)]
                        if down_total is None:
                            down_total, mid_total = list(down), mid
                        else:
                            down_total = [a + b for a, b in zip(down_total, down)]
                            mid_total = mid_total + mid
                    return down_total, mid_total

            cls.cls = KiriMultiControlNet
        return cls.cls


class _Held:
    """Modules kept in the per-model state that core.addons.state_bytes does not count (they hold the loaded
    models, which the model manager counts already)."""

    def __init__(self, wrapper: Any = None, direct: Any = None, adapter: Any = None) -> None:
        self.wrapper, self.direct, self.adapter = wrapper, direct, adapter


class ControlNets(Addon):
    """The ControlNet units of one job."""

    name = KIND

    def __init__(self, units: list[ControlUnit], field: str = "controlnet"):
        self.units = [u for u in units if u.enabled]
        self.field = field
        self.entries: dict[int, Any] = {}  # unit index -> catalog entry
        self.models: dict[int, ControlModel] = {}
        self.used: list[ControlUnit] = []  # units that reach the pipeline (an image, a weight above 0)
        self.skipped: dict[int, str] = {}  # unit index -> why it was left out
        self.img2img = False
        self.hires_first = False
        self._wrapper: Any = None
        self._catalog: Any = None
        self.adapters = False  # the used units are T2I-Adapters (handed as "adapter"), not ControlNets
        self._adapter: Any = None
        self._direct: Any = None  # a single non-UNet ControlNet (SD3, Flux, Union), handed as it is

    @classmethod
    def from_settings(cls, value: Any) -> "ControlNets | None":
        field = getattr(value, "field", "controlnet")
        units = parse_units(value, field)
        if not any(unit.enabled for unit in units):
            return None
        return cls(units, field)

    def where(self, unit: ControlUnit, key: str) -> str:
        return f"{self.field}[{unit.index}].{key}"

    # when built: names
    def check(self, catalog: Any) -> None:
        for unit in self.units:
            if not module_known(unit.module):
                raise InvalidRequest(self.where(unit, "module"), f"unknown ControlNet preprocessor {unit.module!r}; "
                                                                 f"available: {', '.join(_module_list())}")
            if unit.model:
                self.entries[unit.index] = _find(catalog, unit, self.where(unit, "model"))

    # per job: which units are used, their models read and checked against the checkpoint's family
    @contextmanager
    def job(self, ctx: Any, model: Any, request: Any) -> Iterator[None]:
        self.img2img = getattr(request, "init_image", None) is not None
        self.hires_first = getattr(request, "hires", None) is not None  # a hires fix's first pass (txt2img)
        self.used, self.skipped, self.models = [], {}, {}
        family = getattr(model, "family", None)
        for unit in self.units:
            if unit.image is None and not self.img2img:
                self.skipped[unit.index] = "no image"
                continue
            if not unit.model:
                self.skipped[unit.index] = "no model"
                continue
            entry = self.entries.get(unit.index) or _find(ctx.catalog, unit, self.where(unit, "model"))
            self.entries[unit.index] = entry
            if entry.problem:
                raise InvalidRequest(self.where(unit, "model"), f"the ControlNet {entry.name!r} cannot be used: {entry.problem}")
            if entry.family and family and entry.family != family:
                raise InvalidRequest(self.where(unit, "model"), _family_message(entry.name, entry.family, model.name, family))
            if unit.weight == 0:
                continue  # left out entirely: the picture is the checkpoint's, bit for bit
            loaded = ctx.models.get_of_kind(KIND, entry.name).model
            if loaded.family and family and loaded.family != family:
                raise InvalidRequest(self.where(unit, "model"), _family_message(entry.name, loaded.family, model.name, family))
            if loaded.type == "t2i" and self.img2img:
                self.skipped[unit.index] = "a T2I-Adapter, which diffusers runs in text to image only"
                continue
            self.models[unit.index] = loaded
            self.used.append(unit)
        kinds = {self.models[u.index].type for u in self.used}
        if len(kinds) > 1:
            raise InvalidRequest(self.field, "T2I-Adapters and ControlNets cannot be combined in one request "
                                             "(diffusers has no pipeline that takes both): use one kind")
        self.adapters = kinds == {"t2i"}
        if len(self.used) > 1 and not self.adapters and any(not _is_unet_controlnet(self.models[u.index].module) for u in self.used):
            names = [self.models[u.index].name for u in self.used if not _is_unet_controlnet(self.models[u.index].module)]
            raise InvalidRequest(self.field, f"{', '.join(names)} cannot be combined with other units (one such unit at a time)")
        self._catalog = ctx.catalog
        yield

    # per model: the units' ControlNets on the checkpoint's device and dtype
    def state_key(self) -> Any:
        if not self.used:
            return None
        return tuple(self.models[u.index].name for u in self.used)

    def load_state(self, ctx: Any, model: Any) -> Any:
        pipeline = model.pipeline
        denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
        device, dtype = (denoiser.device, denoiser.dtype) if denoiser is not None else ("cpu", None)
        originals = [self.models[u.index].module for u in self.used]
        nets = [_placed(module, device, dtype) for module in originals]
        # What the memory budget counts here: only the copies moved to the checkpoint's device or dtype (the
        # loaded models themselves are counted by the model manager); the wrappers are held uncounted.
        copies = [net for net, module in zip(nets, originals) if net is not module]
        if self.adapters:
            from diffusers import MultiAdapter

            return {"copies": copies, "held": _Held(adapter=nets[0] if len(nets) == 1 else MultiAdapter(nets))}
        if len(nets) == 1 and not _is_unet_controlnet(nets[0]):
            return {"copies": copies, "held": _Held(direct=nets[0])}
        return {"copies": copies, "held": _Held(wrapper=_SoftMulti.get()(nets))}

    def use_state(self, state: Any) -> None:
        held = state["held"]
        self._wrapper, self._direct, self._adapter = held.wrapper, held.direct, held.adapter

    def pipeline_components(self, ctx: Any, model: Any) -> dict[str, Any]:
        if not self.used:
            return {}
        if self.adapters:
            return {"adapter": self._adapter}
        return {"controlnet": self._wrapper if self._wrapper is not None else self._direct}

    # per call: the maps and the pipeline's kwargs
    def apply(self, call: Any) -> None:
        lines = self._lines()
        for index, why in self.skipped.items():
            note = f"controlnet: ControlNet unit {index} was skipped: it has {why}"
            if note not in call.warnings:
                call.warnings.append(note)
        if not self.used or call.passthrough is not None:  # nothing denoises (img2img at 0 steps)
            call.infotext.update(lines)
            return
        width, height = _size_of(call)
        init = call.kwargs.get("image")
        init = init if _is_picture(init) else None
        mask = call.kwargs.get("mask_image")
        mask = mask if _is_picture(mask) else None
        from PIL import Image

        maps, weights = [], []
        for unit in self.used:
            source = unit.image if unit.image is not None else init
            if source is None:  # a hires fix's second pass from latents: no picture to take the map from
                note = f"controlnet: ControlNet unit {unit.index} has no image for this pass; it was left out of it"
                if note not in call.warnings:
                    call.warnings.append(note)
                maps.append(Image.new("RGB", (width, height)))
                weights.append(0.0)  # zero residuals: the pass is as without the unit
                continue
            weight = unit.weight
            second = getattr(call, "first_pass_steps", None) is not None  # a hires fix's second pass
            if (unit.hr_option == "Low res only" and second) or (unit.hr_option == "High res only" and self.hires_first):
                weight = 0.0  # sd-webui-controlnet's hr_option: the unit sits this pass out (zero residuals)
            resolution = min(width, height) if unit.pixel_perfect else unit.processor_res
            unit_mask = unit.mask if unit.mask is not None else mask
            array = run_preprocessor(unit.module, source, resolution, unit.threshold_a, unit.threshold_b,
                                     mask=unit_mask, catalog=self._catalog, field=self.where(unit, "module"))
            fitted = fit(Image.fromarray(array), width, height, unit.resize_mode)
            if unit.module.startswith("inpaint") and unit_mask is not None and not self.adapters:
                fitted = _inpaint_condition(fitted, fit(unit_mask.convert("L"), width, height, unit.resize_mode))
            maps.append(fitted)
            weights.append(weight)
        # the map's argument: `control_image` where the pipeline has one (img2img and inpaint, where `image` is the
        # init picture; SD3's and Flux's ControlNet pipelines), else `image` (SD 1.x/2.x/SDXL text to image)
        key = "control_image" if call.accepts("control_image") else "image"
        if self.adapters:  # T2I-Adapter: its features added to the UNet's, for the first guidance_end of the steps
            call.kwargs["image"] = maps if len(maps) > 1 else maps[0]
            call.kwargs["adapter_conditioning_scale"] = weights if len(weights) > 1 else weights[0]
            if call.accepts("adapter_conditioning_factor"):
                call.kwargs["adapter_conditioning_factor"] = max(u.guidance_end for u in self.used)
        elif self._wrapper is not None:
            self._wrapper.soft = [u.control_mode == 1 for u in self.used]
            call.kwargs[key] = maps
            call.kwargs["controlnet_conditioning_scale"] = weights
            call.kwargs["control_guidance_start"] = [u.guidance_start for u in self.used]
            call.kwargs["control_guidance_end"] = [u.guidance_end for u in self.used]
        else:
            unit = self.used[0]
            call.kwargs[key] = maps[0]
            call.kwargs["controlnet_conditioning_scale"] = weights[0]
            call.kwargs["control_guidance_start"] = unit.guidance_start
            call.kwargs["control_guidance_end"] = unit.guidance_end
        if any(u.control_mode == 2 for u in self.used) and not self.adapters and call.accepts("guess_mode"):
            call.kwargs["guess_mode"] = True
        call.infotext.update(lines)

    def release(self, call: Any) -> None:
        if self._wrapper is not None:
            self._wrapper.soft = [False] * len(self._wrapper.nets)
        # The "ControlNet <i>" lines in the request's unit order, as sd-webui-controlnet writes them, whichever
        # add-on (this one, IP-Adapter's) wrote each; release runs after every add-on's apply.
        infotext = getattr(call, "infotext", None)
        if isinstance(infotext, dict):
            lines = sorted((k for k in infotext if re.fullmatch(r"ControlNet \d+", k)), key=lambda k: int(k.split()[1]))
            for key in lines:
                infotext[key] = infotext.pop(key)

    def infotext(self) -> dict[str, object]:
        return self._lines()

    def sources(self) -> dict[str, Any]:
        """Each unit's own control picture (and mask), kept with the saved outputs for the Library's Reproduce;
        a unit that reads the img2img picture has none of its own."""
        kept: dict[str, Any] = {}
        for unit in self.units:
            if _is_picture(unit.image):
                kept[image_key(unit.index)] = unit.image
            if _is_picture(unit.mask):
                kept[mask_key(unit.index)] = unit.mask
        return kept

    def _lines(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for unit in self.units:
            if unit.index in self.skipped:
                out[f"ControlNet {unit.index}"] = f"Skipped: {self.skipped[unit.index]}"
                continue
            entry = self.entries.get(unit.index)
            model = f"{entry.name} [{short_hash(entry)}]" if entry is not None else (unit.model or "None")
            out[f"ControlNet {unit.index}"] = infotext_line(_with_defaults(unit), model)
        return out


def infotext_line(unit: ControlUnit, model: str) -> str:
    """sd-webui-controlnet's infotext value of a unit (written quoted: it holds commas)."""
    parts = [("Module", unit.module), ("Model", model), ("Weight", _plain(unit.weight, 1)),
             ("Resize Mode", unit.resize_mode_name), ("Processor Res", str(unit.processor_res)),
             ("Threshold A", _plain(unit.threshold_a)), ("Threshold B", _plain(unit.threshold_b)),
             ("Guidance Start", _plain(unit.guidance_start, 1)), ("Guidance End", _plain(unit.guidance_end, 1)),
             ("Pixel Perfect", str(unit.pixel_perfect)), ("Control Mode", unit.control_mode_name)]
    return ", ".join(f"{k}: {v}" for k, v in parts)


def _with_defaults(unit: ControlUnit) -> ControlUnit:
    """The unit with its module's slider defaults where it sent none (what the preprocessor used)."""
    try:
        p = preprocessors().get(unit.module) if unit.module not in ("none", "None", "") else None
    except InvalidRequest:
        return unit
    a = unit.threshold_a if unit.threshold_a is not None or p is None or p.threshold_a is None else p.threshold_a.value
    b = unit.threshold_b if unit.threshold_b is not None or p is None or p.threshold_b is None else p.threshold_b.value
    return unit.with_(threshold_a=a, threshold_b=b)


def _plain(value: float | None, decimals: int = 0) -> str:
    if value is None:
        return "-1"
    if float(value).is_integer() and decimals == 0:
        return str(int(value))
    return str(float(value))


def _inpaint_condition(image: Any, mask: Any) -> Any:
    """The inpaint ControlNet's input (sd-webui-controlnet's inpaint_only): 1x3xHxW in 0..1, masked pixels -1."""
    import numpy as np
    import torch

    from .preprocess import inpaint_condition

    array = inpaint_condition(np.asarray(image), np.asarray(mask) > 127)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]


def _family_message(name: str, family: str, model: str, model_family: str) -> str:
    return (f"the ControlNet {name!r} is made for {family_label(family)} and {model} is a {family_label(model_family)} "
            f"model: choose a ControlNet made for {family_label(model_family)}")


def _is_unet_controlnet(module: Any) -> bool:
    from diffusers import ControlNetModel

    return isinstance(module, ControlNetModel)


def _placed(module: Any, device: Any, dtype: Any) -> Any:
    """`module` on `device` in `dtype`: the loaded one when it is there already, else a copy moved there (the
    loaded model stays as read, for other checkpoints)."""
    import copy

    params = next(module.parameters(), None)
    if params is None or (params.device == device and (dtype is None or params.dtype == dtype)):
        return module
    return copy.deepcopy(module).to(device=device, dtype=dtype)


def _size_of(call: Any) -> tuple[int, int]:
    width, height = call.kwargs.get("width"), call.kwargs.get("height")
    if width and height:
        return int(width), int(height)
    image = call.kwargs.get("image")
    if _is_picture(image):
        return image.size
    raise InvalidRequest("controlnet", f"{type(call.pipeline).__name__} gives no size to fit the control maps to")


def _is_picture(value: Any) -> bool:
    from PIL import Image

    return isinstance(value, Image.Image)


__all__ = ["ControlNets", "from_api_script", "fit", "infotext_line", "is_ip_adapter", "model_type", "preprocessors",
           "run_preprocessor", "short_hash"]
