"""IP-Adapter: the look of reference pictures as a prompt, on SD 1.x and SDXL, as the add-on "ip_adapter";
its weights from models/ipadapter/ and its image encoders from models/clip_vision/ (files.py says which
files). sd-webui-controlnet runs IP-Adapters as ControlNet units, and so does its API: a unit of
`alwayson_scripts.controlnet.args` whose module is an "ip-adapter" one comes here (the others belong to
the ControlNet add-on), and a request may name the units in `addons` too:

    {"ip_adapter": [{"image": <PIL | numpy | base64 | a list of them>, "module": "ip-adapter_clip_sd15",
                     "model": "ip-adapter_sd15 [6a3f6166]", "weight": 0.8,
                     "guidance_start": 0, "guidance_end": 1, "enabled": true}, ...]}

Each unit keeps its index in the request (`index`, else its place in the list), so its infotext line is
sd-webui-controlnet's `ControlNet <index>: "Module: ..., Model: name [hash8], Weight: ..., Guidance Start:
..., Guidance End: ..."`. Modules (MODULES) choose the image encoder: "ip-adapter_clip_sd15" and
"ip-adapter_clip_h" a ViT-H, "ip-adapter_clip_sdxl" and "ip-adapter_clip_g" a ViT-bigG, "ip-adapter-auto"
any. Kiri takes the encoder in models/clip_vision/ whose embedding width (projection_dim) is the one the
adapter projects, preferring one whose name says h or bigG as the module asks (a unit's "image_encoder"
names one outright). Several pictures in one unit are diffusers' multi-image IP-Adapter: each picture's
tokens are added to the adapter's (not averaged), so each counts as a reference of its own.

Lifetimes (core/addons.py):
    when built  the model names (unknown: InvalidRequest listing the IP-Adapters), modules, weights.
    per job     the adapter weights through the model manager (loader "ipadapter"), checked to fit the
                checkpoint's UNet (the width and number of its cross-attention layers; refused naming both
                families); the encoder (loader "clip_vision") encodes every unit's pictures once.
    per model   for each adapter, its image projection and the key/value projections of every
                cross-attention layer (diffusers' own converters), built once on the UNet's device and
                dtype, kept as derived state of the checkpoint and counted in the memory budget (once: a
                later set of units shares the adapters an earlier one built). They stay on the device they
                were built on when the checkpoint moves to the CPU for another model (moved back per call
                if the UNet is elsewhere).
    per call    apply() swaps diffusers' IPAdapterAttnProcessor2_0 into the UNet's cross-attention layers
                (sharing the kept projections; one entry per unit, at its weight), sets the UNet's
                encoder_hid_proj to a MultiIPAdapterImageProjection and its config's encoder_hid_dim_type to
                "ip_image_proj", and passes `ip_adapter_image_embeds` ([negative zeros, positive] under CFG,
                as diffusers' encode_image makes them), so the pipeline needs no image encoder of its own;
                release() puts back the very processor objects, encoder_hid_proj and config value it found:
                other users' jobs between batches see the plain checkpoint, whose weights are never touched.
    per step    a unit's guidance start/end as sd-webui-controlnet reads them: it acts at step i of n when
                start <= i/n <= end; outside, its scale is 0 (diffusers' processors then skip it).
A unit of weight 0 is dropped when the add-on is built (the picture is the checkpoint's, bit for bit);
a unit without a picture is skipped with a note in the result's warnings and its infotext line.
Combinable with ControlNet units: the ControlNet variants of the StableDiffusion pipelines take
ip_adapter_image_embeds too.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from webui.engine.controlnet.reproduce import image_key  # IP-Adapter units share sd-webui-controlnet's lines
from webui.engine.core.addons import Addon, AddonSession, AddonSpec
from webui.engine.core.errors import InvalidRequest

from .files import (CONTROLNET_FOLDERS, AdapterWeights, ImageEncoder, describe_any_adapter, describe_encoder,
                    encoder_projection_dim, family_label, load_adapter, load_encoder)

__all__ = ["ENCODER_KIND", "FIELD", "KIND", "MODULES", "NAME", "IPAdapterUnits", "Unit", "from_api_script", "list_models",
           "parse_units", "register"]

log = logging.getLogger(__name__)

NAME = "ip_adapter"
KIND = "ipadapter"  # catalog kind of the adapter weights
ENCODER_KIND = "clip_vision"
FIELD = "addons.ip_adapter"
API_FIELD = "alwayson_scripts.controlnet.args"
MODULES = ("ip-adapter_clip_sd15", "ip-adapter_clip_sdxl", "ip-adapter_clip_h", "ip-adapter_clip_g", "ip-adapter-auto")
# the image encoder each module asks for: ViT-H ("h"), ViT-bigG ("g"), any (None)
_MODULE_ENCODER = {"ip-adapter_clip_sd15": "h", "ip-adapter_clip_h": "h", "ip-adapter_clip_sdxl": "g",
                   "ip-adapter_clip_g": "g", "ip-adapter-auto": None}
_ENCODER_NAMES = {"h": ("vit-h", "vith", "clip_h", "clip-h", "clip_vision_h", "_h."),
                  "g": ("bigg", "vit-g", "clip_g", "clip-g", "_g.")}
MAX_WEIGHT = 5.0
MAX_UNITS = 10
INFOTEXT_KEYS = tuple(f"ControlNet {i}" for i in range(MAX_UNITS))


# --- units ---------------------------------------------------------------------------------------

@dataclass
class Unit:
    """One IP-Adapter unit of a request: its index there, its reference pictures (PIL), module, model."""

    index: int
    images: list[Any]
    module: str
    model: str
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    image_encoder: str | None = None

    def active(self, step: int, steps: int) -> bool:
        """sd-webui-controlnet's window: the unit acts at step i of n when start <= i/n <= end."""
        if steps <= 0:
            return True
        fraction = step / steps
        return self.guidance_start <= fraction <= self.guidance_end


def _normal(module: Any) -> str:
    return str(module or "").strip().lower().replace("_", "-")


_MODULE_NAMES = {_normal(m): m for m in MODULES}  # "ip_adapter_clip_sd15", "IP-Adapter-Auto" -> the names above


def is_ip_adapter_module(module: Any) -> bool:
    return isinstance(module, str) and _normal(module).startswith("ip-adapter")


def _number(value: Any, what: str, field_name: str, low: float, high: float) -> float:
    if isinstance(value, bool):
        raise InvalidRequest(field_name, f"{what} must be a number (got {value!r})")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(field_name, f"{what} must be a number (got {value!r})") from None
    if number != number or not low <= number <= high:
        raise InvalidRequest(field_name, f"{what} must be a number from {low:g} to {high:g} (got {value!r})")
    return number


def _images(value: Any, field_name: str) -> list[Any]:
    """A unit's picture(s) -> PIL images: PIL, numpy (H x W [x C]), base64 text / data URL, sd-webui-controlnet's
    {"image": ..., "mask": ...}, or a list of these."""
    import numpy as np
    from PIL import Image

    from webui.engine.core.limits import base64_bytes, decode_image

    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, (list, tuple)):
        return [image for i, item in enumerate(value) for image in _images(item, f"{field_name}[{i}]")]
    if isinstance(value, dict):
        return _images(value.get("image"), f"{field_name}.image")
    if isinstance(value, Image.Image):
        return [value.convert("RGB")]
    if isinstance(value, np.ndarray):
        array = value
        if array.dtype != np.uint8:
            array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4)):
            return [Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[2] == 1 else array).convert("RGB")]
        raise InvalidRequest(field_name, f"{field_name} must be an H x W or H x W x 3 picture (got shape {array.shape})")
    if isinstance(value, str):
        return [decode_image(base64_bytes(value, field_name), field_name).convert("RGB")]
    raise InvalidRequest(field_name, f"{field_name} must be a picture (PIL, numpy or base64), or a list of them")


def _model_name(value: Any) -> str:
    """`name [hash]` (sd-webui-controlnet's titles) -> name."""
    text = str(value or "").strip()
    if text.endswith("]") and " [" in text:
        text = text[: text.rindex(" [")].strip()
    return text


def parse_units(value: Any, field: str = FIELD) -> list[Unit]:
    """A request's IP-Adapter units (a list of unit dicts, or {"units": [...], "field": ...} as
    from_api_script hands them) -> the enabled units with a weight other than 0, each with its index in
    the request. Bad values: InvalidRequest naming `field` (and the unit)."""
    if isinstance(value, dict) and "units" in value:
        field = str(value.get("field") or field)
        value = value["units"]
    if value is None or value is False or value == []:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise InvalidRequest(field, f"{field} must be a list of IP-Adapter units (got {type(value).__name__})")
    if len(value) > MAX_UNITS:
        raise InvalidRequest(field, f"at most {MAX_UNITS} IP-Adapter units (got {len(value)})")
    units = []
    for place, item in enumerate(value):
        if isinstance(item, Unit):
            units.append(item)
            continue
        if not isinstance(item, dict):
            raise InvalidRequest(field, f"each IP-Adapter unit must be an object (got {item!r:.80})")
        index = item.get("index", place)
        where = f"{field}[{index}]"
        if not item.get("enabled", True):
            continue
        module = _MODULE_NAMES.get(_normal(item.get("module")), str(item.get("module") or ""))
        if module not in MODULES:
            raise InvalidRequest(f"{where}.module", f"unknown IP-Adapter module {module!r}; available: {', '.join(MODULES)}")
        model = _model_name(item.get("model"))
        if not model or model.lower() == "none":
            raise InvalidRequest(f"{where}.model", f"the IP-Adapter unit {index} names no model")
        weight = _number(item.get("weight", 1.0), f"the weight of unit {index}", f"{where}.weight", 0.0, MAX_WEIGHT)
        start = _number(item.get("guidance_start", 0.0), f"guidance_start of unit {index}", f"{where}.guidance_start", 0.0, 1.0)
        end = _number(item.get("guidance_end", 1.0), f"guidance_end of unit {index}", f"{where}.guidance_end", 0.0, 1.0)
        if start > end:
            raise InvalidRequest(f"{where}.guidance_start",
                                 f"guidance_start ({start:g}) of unit {index} is after its guidance_end ({end:g})")
        if weight == 0:
            continue  # nothing to add: the picture is the checkpoint's
        images = _images(item.get("image", item.get("input_image")), f"{where}.image")  # input_image: the old API's
        encoder = item.get("image_encoder")
        units.append(Unit(int(index), images, module, model, weight, start, end, str(encoder) if encoder else None))
    return units


def from_api_script(title: str, args: Any, alone: bool = False) -> Any:
    """AddonSpec.from_api_script for sd-webui-controlnet's "controlnet" script: its IP-Adapter units (with
    their index among the args), or None when it has none. Pictures stay as sent: the factory decodes them.

    `alone`: no other add-on reads the script (no ControlNet add-on is registered), so its other enabled
    units are listed under "unread" and the add-on says in the result's warnings that they were not applied,
    instead of dropping them silently."""
    if not isinstance(args, list):
        raise InvalidRequest(API_FIELD, f"{API_FIELD} must be a list of ControlNet units")
    units, unread = [], []
    for index, unit in enumerate(args):
        if isinstance(unit, dict) and is_ip_adapter_module(unit.get("module")):
            units.append({**unit, "index": index})
        elif alone and (not isinstance(unit, dict) or unit.get("enabled", True)):
            unread.append([index, str(unit.get("module") or "none") if isinstance(unit, dict) else repr(unit)[:40]])
    if not units and not unread:
        return None
    return {"units": units, "field": API_FIELD, **({"unread": unread} if unread else {})}


def _script_reader(addons: Any) -> Any:
    """from_api_script, told whether another registered add-on (ControlNet's) reads the same script."""
    def read(title: str, args: Any) -> Any:
        others = [name for name in addons.names()
                  if name != NAME and title.lower() in {s.lower() for s in addons.get(name).api_scripts}]
        return from_api_script(title, args, alone=not others)

    return read


# --- models --------------------------------------------------------------------------------------

def _hash8(catalog: Any, entry: Any) -> str:
    try:
        return catalog.hashes.sha256(entry.path)[:8]
    except (OSError, AttributeError):
        return ""


def list_models(catalog: Any, family: str | None = None) -> list[dict[str, Any]]:
    """The IP-Adapters, `{name, title: "name [hash8]", family, kind}`, those of `family` (and of unknown
    family) when it is given; the ones that cannot be used are left out."""
    out = []
    for entry in catalog.of_kind(KIND):
        if entry.problem or (family and entry.family and entry.family != family):
            continue
        short = _hash8(catalog, entry)
        out.append({"name": entry.name, "title": f"{entry.name} [{short}]" if short else entry.name,
                    "family": entry.family, "kind": KIND})
    return out


def find(catalog: Any, name: str, field_name: str = FIELD) -> Any:
    entry = catalog.find_of_kind(KIND, name)
    if entry is None:
        catalog.scan()
        entry = catalog.find_of_kind(KIND, name)
    if entry is None:
        known = ", ".join(e.name for e in catalog.of_kind(KIND)) or "(none: put IP-Adapter files in models/ipadapter/)"
        raise InvalidRequest(field_name, f"unknown IP-Adapter model {name!r}; available: {known}")
    if entry.problem:
        raise InvalidRequest(field_name, f"the IP-Adapter {entry.name!r} ({entry.path.name}) cannot be used: {entry.problem}")
    return entry


def adapter_id(entry: Any) -> str:
    """One id per file version (the key of its per-model state)."""
    stamp = entry.path.stat().st_mtime if entry.path.exists() else 0
    return hashlib.sha1(f"{entry.path}:{stamp}".encode()).hexdigest()[:12]


def cross_attention_layers(unet: Any) -> list[str]:
    """The UNet's cross-attention processors' names, in the order IP-Adapter files number them."""
    return [name for name in unet.attn_processors if not name.endswith("attn1.processor") and "motion_modules" not in name]


def _choose_encoder(catalog: Any, unit: Unit, weights: AdapterWeights, where: str) -> Any:
    encoders = [e for e in catalog.of_kind(ENCODER_KIND) if not e.problem]
    if not encoders:
        catalog.scan()
        encoders = [e for e in catalog.of_kind(ENCODER_KIND) if not e.problem]
    listed = (", ".join(f"{e.name} ({encoder_projection_dim(e)})" for e in encoders)
              or "(none: put image encoders in models/clip_vision/)")
    if unit.image_encoder:
        for entry in encoders:
            if unit.image_encoder.strip() in (entry.name, entry.path.name):
                return entry
        raise InvalidRequest(f"{where}.image_encoder", f"unknown image encoder {unit.image_encoder!r}; available: {listed}")
    wanted = weights.summary.embed_dim
    fitting = [e for e in encoders if encoder_projection_dim(e) == wanted]
    if not fitting:
        raise InvalidRequest(f"{where}.module", f"the IP-Adapter {weights.name!r} takes image embeddings of width {wanted}, "
                                               f"and no image encoder in models/clip_vision/ gives them; available "
                                               f"(width): {listed}")
    letter = _MODULE_ENCODER.get(unit.module)
    named = [e for e in fitting if letter and any(mark in e.path.name.lower() for mark in _ENCODER_NAMES[letter])]
    return (named or fitting)[0]


# --- the add-on ----------------------------------------------------------------------------------

@dataclass
class _Prepared:
    """One unit, ready for the job: its adapter, picture embeddings and infotext line."""

    unit: Unit
    entry: Any
    adapter: str  # adapter_id
    embeds: Any  # [n pictures, embedding width], float32 CPU
    title: str


class IPAdapterUnits(Addon):
    """The IP-Adapter units of one job, swapped into the UNet for each of its calls and out after."""

    name = NAME

    def __init__(self, units: list[Unit], field_name: str = FIELD, unread: list[Any] | None = None):
        self.units = units
        self.field = field_name
        self.unread = list(unread or [])  # [index, module] of the script's units no add-on reads
        self.skipped = [u for u in units if not u.images]
        self.prepared: list[_Prepared] = []
        self._weights: dict[str, AdapterWeights] = {}
        self._state: dict[str, Any] = {}
        self._procs: dict[int, tuple[dict[str, Any], Any]] = {}  # id(unet) -> (IP processors by name, projection)
        self._saved: list[tuple[Any, dict[str, Any], Any, bool, Any]] = []

    @classmethod
    def from_settings(cls, value: Any) -> "IPAdapterUnits | None":
        field_name = str(value.get("field") or FIELD) if isinstance(value, dict) and "units" in value else FIELD
        units = parse_units(value, field_name)
        unread = value.get("unread") if isinstance(value, dict) and "units" in value else None
        return cls(units, field_name, unread) if units or unread else None

    def _where(self, unit: Unit) -> str:
        return f"{self.field}[{unit.index}]"

    # when built: the names
    def check(self, catalog: Any) -> None:
        for unit in self.units:
            find(catalog, unit.model, f"{self._where(unit)}.model")

    # per job: the weights (fit checked), the pictures encoded once
    @contextmanager
    def job(self, ctx: Any, model: Any, request: Any) -> Iterator[None]:
        self.prepared = []
        if not any(unit.images for unit in self.units):
            yield
            return
        unet = getattr(model.pipeline, "unet", None)
        if unet is None or not hasattr(unet, "attn_processors"):
            raise InvalidRequest(self.field, f"{model.name} is a {family_label(model.family)} model without a UNet; "
                                             "IP-Adapters work with SD 1.x and SDXL models")
        layers = cross_attention_layers(unet)
        width = unet.config.cross_attention_dim
        for unit in self.units:
            if not unit.images:
                continue
            where = self._where(unit)
            entry = find(ctx.catalog, unit.model, f"{where}.model")
            weights = ctx.models.get_of_kind(KIND, entry.name).model
            summary = weights.summary
            if summary.cross_dim != width or summary.layers != len(layers):
                made_for = (f"an {family_label(summary.family)} IP-Adapter" if summary.family else
                            f"an IP-Adapter for a model of cross-attention width {summary.cross_dim} ({summary.layers} layers)")
                raise InvalidRequest(f"{where}.model", f"the IP-Adapter {entry.name!r} is {made_for}, and {model.name} is a "
                                                       f"{family_label(model.family)} model (width {width}, {len(layers)} "
                                                       f"layers): use an IP-Adapter made for {family_label(model.family)}")
            encoder_entry = _choose_encoder(ctx.catalog, unit, weights, where)
            encoder: ImageEncoder = ctx.models.get_of_kind(ENCODER_KIND, encoder_entry.name).model
            if encoder.projection_dim != summary.embed_dim:
                raise InvalidRequest(f"{where}.image_encoder",
                                     f"the image encoder {encoder.name!r} gives embeddings of width "
                                     f"{encoder.projection_dim}; {entry.name!r} takes {summary.embed_dim}")
            self._weights[adapter_id(entry)] = weights
            short = _hash8(ctx.catalog, entry)
            self.prepared.append(_Prepared(unit, entry, adapter_id(entry), encoder.encode(unit.images),
                                           f"{entry.name} [{short}]" if short else entry.name))
        try:
            yield
        finally:
            self._procs.clear()

    # per model: each adapter's projections, built once for the checkpoint
    def state_key(self) -> Any:
        if not self.prepared:
            return None
        return tuple(sorted({p.adapter for p in self.prepared}))

    def load_state(self, ctx: Any, model: Any) -> Any:
        """The adapters' modules: those another set of units built for this checkpoint already are shared
        (kept apart, so the memory budget counts each adapter once), the others built now."""
        kept: dict[str, Any] = {}
        for slot, value in getattr(model, "derived", {}).items():
            if isinstance(slot, tuple) and slot[:2] == (AddonSession.DERIVED, NAME) and isinstance(value, dict):
                kept.update(value.get("own", {}))
        own, shared = {}, {}
        for adapter in sorted({p.adapter for p in self.prepared}):
            if adapter in kept:
                shared[adapter] = kept[adapter]
            else:
                own[adapter] = build_adapter(model.pipeline.unet, self._weights[adapter])
        return {"own": own, "shared": _Shared(shared)}

    def use_state(self, state: Any) -> None:
        self._state = {**state["own"], **state["shared"].adapters}

    # per call
    def apply(self, call: Any) -> None:
        for unit in self.skipped:
            call.warnings.append(f"ControlNet {unit.index} ({unit.module}): no image, skipped")
        if self.unread:
            call.warnings.append(f"{API_FIELD}: units not applied (Kiri has no ControlNet add-on; only IP-Adapter units "
                                 "run): " + ", ".join(f"{index} ({module})" for index, module in self.unread))
        call.infotext.update(self.infotext())
        if not self.prepared:
            return
        import torch

        pipeline = call.pipeline
        unet = getattr(pipeline, "unet", None)
        if unet is None:
            raise InvalidRequest(self.field, f"{type(pipeline).__name__} has no UNet to add an IP-Adapter to")
        if getattr(unet, "encoder_hid_proj", None) is not None:
            raise InvalidRequest(self.field, f"{type(pipeline).__name__}'s UNet projects its text itself "
                                             f"({unet.config.encoder_hid_dim_type}); IP-Adapters cannot be added to it")
        procs, projection = self._processors(unet)
        for proc in procs.values():
            proc.scale = [p.unit.weight if p.unit.active(0, 1) else 0.0 for p in self.prepared]
        originals = unet.attn_processors
        registered = "encoder_hid_proj" in unet._modules
        self._saved.append((unet, originals, unet.config.encoder_hid_dim_type, registered,
                            getattr(unet, "encoder_hid_proj", None)))
        try:  # the session releases only add-ons whose apply returned: put the UNet back here if this fails
            unet.set_attn_processor({name: procs.get(name, proc) for name, proc in originals.items()})
            unet.encoder_hid_proj = projection
            unet.config.encoder_hid_dim_type = "ip_image_proj"  # diffusers' FrozenDict takes attribute writes
            guidance = call.kwargs.get("guidance_scale")
            cfg = (7.5 if guidance is None else guidance) > 1 and unet.config.time_cond_proj_dim is None
            param = next(unet.parameters())
            embeds = []
            for p in self.prepared:
                positive = p.embeds[None].to(device=param.device, dtype=param.dtype)
                embeds.append(torch.cat([torch.zeros_like(positive), positive]) if cfg else positive)
            call.kwargs["ip_adapter_image_embeds"] = embeds
        except BaseException:
            self.release(call)
            raise

    def _processors(self, unet: Any) -> tuple[dict[str, Any], Any]:
        """This job's IP processors for `unet` (one entry per unit, sharing the kept projections) and its
        image projection, built at the first call."""
        if id(unet) in self._procs:
            return self._procs[id(unet)]
        import torch
        from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
        from diffusers.models.embeddings import MultiIPAdapterImageProjection

        param = next(unet.parameters())
        states = []
        for p in self.prepared:
            state = self._state.get(p.adapter)
            if state is None:  # a pipeline over other modules than the one the state was built for
                state = self._state[p.adapter] = build_adapter(unet, self._weights[p.adapter])
            for module in (state["projection"], *[m for pair in state["layers"].values() for m in pair]):
                weight = next(module.parameters())
                if weight.device != param.device or weight.dtype != param.dtype:
                    module.to(device=param.device, dtype=param.dtype)
            states.append(state)
        procs = {}
        names = cross_attention_layers(unet)
        unknown = [name for name in names if any(name not in state["layers"] for state in states)]
        if unknown:
            raise InvalidRequest(self.field, f"{type(unet).__name__} has cross-attention layers the IP-Adapter was not "
                                             f"built for ({unknown[0]}, ...)")
        for name in names:
            pairs = [state["layers"][name] for state in states]
            hidden, width = pairs[0][0].out_features, pairs[0][0].in_features
            with torch.device("meta"):
                proc = IPAdapterAttnProcessor2_0(hidden_size=hidden, cross_attention_dim=width,
                                                 num_tokens=[state["tokens"] for state in states], scale=1.0)
            proc.to_k_ip = torch.nn.ModuleList([k for k, _ in pairs])
            proc.to_v_ip = torch.nn.ModuleList([v for _, v in pairs])
            procs[name] = proc
        built = (procs, MultiIPAdapterImageProjection([state["projection"] for state in states]))
        self._procs[id(unet)] = built
        return built

    def release(self, call: Any) -> None:
        while self._saved:
            unet, originals, hid_type, registered, projection = self._saved.pop()
            unet.set_attn_processor(dict(originals))
            unet.config.encoder_hid_dim_type = hid_type
            if registered:
                unet.encoder_hid_proj = projection
            else:  # back to a plain attribute, as the UNet was built
                unet._modules.pop("encoder_hid_proj", None)
                object.__setattr__(unet, "encoder_hid_proj", projection)

    # per step: the guidance window
    def on_step(self, step: Any) -> dict[str, Any] | None:
        if not self._saved or not step.steps:
            return None
        unet = self._saved[-1][0]
        procs, _ = self._procs.get(id(unet), ({}, None))
        scales = [p.unit.weight if p.unit.active(step.step + 1, step.steps) else 0.0 for p in self.prepared]
        for proc in procs.values():
            proc.scale = list(scales)
        return None

    def sources(self) -> dict[str, Any]:
        """Each unit's reference pictures, kept with the saved outputs for the Library's Reproduce, under the
        keys the ControlNet lines' reader knows (`ControlNet <index> image hash`, `... image <k> hash`)."""
        kept: dict[str, Any] = {}
        for unit in self.units:
            for k, picture in enumerate(unit.images or [], start=1):
                kept[image_key(unit.index, k)] = picture
        return kept

    def infotext(self) -> dict[str, object]:
        """sd-webui-controlnet's line per unit (a unit without a picture says it was skipped), by index."""
        lines: dict[int, str] = {u.index: f"Module: {u.module}, Model: {u.model}, Skipped: no image" for u in self.skipped}
        for p in self.prepared:
            lines[p.unit.index] = (f"Module: {p.unit.module}, Model: {p.title}, Weight: {p.unit.weight}, "
                                   f"Guidance Start: {p.unit.guidance_start}, Guidance End: {p.unit.guidance_end}")
        return {f"ControlNet {index}": lines[index] for index in sorted(lines)}


@dataclass(frozen=True)
class _Shared:
    """Adapters another state of the same checkpoint owns (and counts): not counted again."""

    adapters: dict[str, Any]


def build_adapter(unet: Any, weights: AdapterWeights) -> dict[str, Any]:
    """One adapter's modules for `unet`, through diffusers' own converters (nothing is set on the UNet):
    {"projection": its ImageProjection, "layers": {processor name: (to_k_ip, to_v_ip)}, "tokens": 4}."""
    param = next(unet.parameters())
    converted = unet._convert_ip_adapter_attn_to_diffusers([weights.state], low_cpu_mem_usage=False)
    layers = {}
    for name in cross_attention_layers(unet):
        proc = converted[name]
        layers[name] = (proc.to_k_ip[0].to(device=param.device, dtype=param.dtype).requires_grad_(False),
                        proc.to_v_ip[0].to(device=param.device, dtype=param.dtype).requires_grad_(False))
    projection = unet._convert_ip_adapter_image_proj_to_diffusers(weights.state["image_proj"], low_cpu_mem_usage=False)
    projection = projection.to(device=param.device, dtype=param.dtype).requires_grad_(False)
    return {"projection": projection, "layers": layers, "tokens": 4}


def register(registries: Any) -> None:
    """Called by bootstrap.build_registries: the "ipadapter" and "clip_vision" model kinds, their loaders,
    and the add-on that reads IP-Adapter units (from `addons` and sd-webui-controlnet's script)."""
    from webui.engine.models.catalog import ModelKind

    registries.add_model_kind(ModelKind(KIND, ("ipadapter", "ip_adapter", "IP-Adapter", *CONTROLNET_FOLDERS),
                                        describe_any_adapter, "IP-Adapter"))
    registries.add_model_kind(ModelKind(ENCODER_KIND, ("clip_vision",), describe_encoder, "CLIP vision"))
    registries.add_loader(KIND, load_adapter)
    registries.add_loader(ENCODER_KIND, load_encoder)
    registries.add_addon(AddonSpec(NAME, IPAdapterUnits.from_settings, INFOTEXT_KEYS, api_scripts=("controlnet",),
                                   from_api_script=_script_reader(registries.addons)))
