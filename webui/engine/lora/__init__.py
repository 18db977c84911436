"""LoRA and LyCORIS: low-rank adapters from models/Lora/ and models/LyCORIS/, switched per call on the
loaded checkpoint, as the add-on "lora"; AUTOMATIC1111's `<lora:...>` prompt tags, `Lora hashes`
infotext, `extra_networks_default_multiplier` setting and /sdapi/v1/loras.

A prompt names them as A1111 does (several at once, in the prompt or the negative prompt):

    <lora:name>                 at the `extra_networks_default_multiplier` setting's weight (1.0)
    <lora:name:0.8>             text encoder and denoiser at 0.8
    <lora:name:0.5:1>           A1111's order: text encoder 0.5, denoiser (UNet) 1
    <lora:name:te=0.5:unet=1>   the same, named
    <lyco:name:...>             the same (A1111's LyCORIS extension's tag)

and a request may name them in `addons` too, merged with the prompt's tags (a tag wins for its name):

    {"lora": [{"name": "outline", "weight": 0.8}, {"name": "b", "te": 0.5, "unet": 1}]}
    {"lora": {"outline": 0.8, "b": {"te": 0.5, "unet": 1}}}

`name` is the file name without its extension (or with it), as A1111 lists it. An unknown name is an
InvalidRequest naming "prompt", refused when the add-ons are built, before the job is queued.

Lifetimes (core/addons.py): per job, each file's weights are read once through the model manager
(loader "lora", files.py; pickles only with --allow-pickle, weights_only=True), and a LoRA of another
family than the checkpoint's is refused naming both; per model, diffusers' `load_lora_weights` injects
each as a PEFT adapter into the checkpoint's UNet and text encoders (kohya, diffusers/PEFT and LoCon
keys), kept with the loaded checkpoint and dropped with it, its tensors counted in the memory budget;
per call, `set_adapters` turns on this job's adapters at their weights (text encoders and denoiser
apart) and release() turns every adapter off, so other users' jobs between batches see the plain
checkpoint. A weight of 0 leaves the adapter off (the picture is the checkpoint's, bit for bit), and
the checkpoint's own weights are never changed (PEFT adds layers beside them; nothing is fused).
The conditioning stage (generation/conditioning.py) calls the text encoder itself, so its adapters act
there; every denoising call site goes through the seam, so hires fix, SD upscale and the X/Y grid get
them too.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from webui.engine.core.addons import Addon, AddonSpec
from webui.engine.core.errors import InvalidRequest
from webui.engine.models.previews import preview_of as shared_preview_of

from .files import LoraWeights, addnet_hash, describe_lora, family_label, load_weights, parsed_metadata, read_header

__all__ = ["FIELD", "INFOTEXT_KEYS", "NAME", "SETTING", "LoraSet", "LoraUse", "checked_multiplier", "find", "list_loras", "parse",
           "register"]

log = logging.getLogger(__name__)

NAME = "lora"
TAG_KINDS = ("lora", "lyco")
FIELD = "prompt"  # where a LoRA is named: the field errors name
INFOTEXT_KEYS = ("Lora hashes",)
SETTING = "extra_networks_default_multiplier"  # A1111's option: the weight of a tag that gives none
MAX_WEIGHT = 100.0


@dataclass(frozen=True)
class LoraUse:
    """One LoRA a job uses: its name as written, and its weights (None: the setting's default)."""

    name: str
    te: float | None = None
    unet: float | None = None

    def weights(self, default: float) -> tuple[float, float]:
        te = default if self.te is None else self.te
        return te, (te if self.unet is None else self.unet)


def _number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(FIELD, f"{what} must be a number (got {value!r})") from None
    if number != number or abs(number) > MAX_WEIGHT:
        raise InvalidRequest(FIELD, f"{what} must be a number from -{MAX_WEIGHT:g} to {MAX_WEIGHT:g} (got {value!r})")
    return number


def checked_multiplier(field: str, value: Any) -> float:
    """A value for the `extra_networks_default_multiplier` setting: a number (bools and NaN refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidRequest(field, f"{field} must be a number (got {value!r})")
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequest(field, f"{field} must be a number (got {value!r})") from None
    if number != number or abs(number) > MAX_WEIGHT:
        raise InvalidRequest(field, f"{field} must be a number from -{MAX_WEIGHT:g} to {MAX_WEIGHT:g} (got {value!r})")
    return number


def from_tag(args: tuple[str, ...]) -> LoraUse:
    """A1111's extra_networks_lora: positional name, te, unet (unet defaults to te); named te=, unet=."""
    positional = [a for a in args if "=" not in a]
    named = dict(a.split("=", 1) for a in args if "=" in a)
    named = {k.strip().lower(): v.strip() for k, v in named.items()}
    if not positional or not positional[0]:
        raise InvalidRequest(FIELD, f"<lora:{':'.join(args)}> names no LoRA")
    name = positional[0]
    te = _number(positional[1], f"the weight of <lora:{name}>") if len(positional) > 1 else None
    unet = _number(positional[2], f"the denoiser weight of <lora:{name}>") if len(positional) > 2 else None
    if "te" in named:
        te = _number(named["te"], f"te= of <lora:{name}>")
    if "unet" in named:
        unet = _number(named["unet"], f"unet= of <lora:{name}>")
    return LoraUse(name, te, unet)


def _from_setting(name: str, value: Any) -> LoraUse:
    if isinstance(value, dict):
        weight = value.get("weight", value.get("multiplier"))
        te = value.get("te", weight)
        unet = value.get("unet", te if "te" in value else weight)
        return LoraUse(name, None if te is None else _number(te, f"the weight of LoRA {name!r}"),
                       None if unet is None else _number(unet, f"the denoiser weight of LoRA {name!r}"))
    return LoraUse(name, None if value is None else _number(value, f"the weight of LoRA {name!r}"))


def parse(value: Any) -> list[LoraUse]:
    """A request's `addons["lora"]` -> the LoRAs it names (see the module's docstring for the shapes)."""
    if value is None or value is True or value == [] or value == {}:
        return []
    if isinstance(value, str):
        return [from_tag(tuple(a.strip() for a in value.split(":")))]
    if isinstance(value, dict) and "name" in value:
        value = [value]
    if isinstance(value, dict):
        return [_from_setting(str(name), settings) for name, settings in value.items()]
    if isinstance(value, list):
        uses = []
        for item in value:
            if isinstance(item, LoraUse):
                uses.append(item)
            elif isinstance(item, str):
                uses.append(from_tag(tuple(a.strip() for a in item.split(":"))))
            elif isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"].strip():
                uses.append(_from_setting(item["name"].strip(), item))
            else:
                raise InvalidRequest(FIELD, f"each LoRA must be {{\"name\": ..., \"weight\": ...}} (got {item!r})")
        return uses
    raise InvalidRequest(FIELD, f"addons.lora must be a list of {{\"name\", \"weight\"}} objects (got {value!r})")


def from_tags(current: Any, tags: list[Any]) -> list[LoraUse]:
    """AddonSpec.from_tags: the request's own LoRAs, then the prompt's tags (a tag replaces a namesake)."""
    uses = {use.name: use for use in parse(current)}
    for tag in tags:
        use = from_tag(tag.args)
        uses[use.name] = use
    return list(uses.values())


def find(catalog: Any, name: str) -> Any:
    """The LoRA entry called `name` (its name, file name or alias: ss_output_name), rescanning once; unknown:
    InvalidRequest naming the prompt and listing what exists, as A1111's error does."""
    entry = catalog.find_of_kind(NAME, name) or _by_alias(catalog, name)
    if entry is None:
        catalog.scan()
        entry = catalog.find_of_kind(NAME, name) or _by_alias(catalog, name)
    if entry is None:
        known = ", ".join(e.name for e in catalog.of_kind(NAME)) or "(none: put LoRA files in models/Lora/)"
        raise InvalidRequest(FIELD, f"unknown LoRA {name!r}; available: {known}")
    return entry


def _by_alias(catalog: Any, name: str) -> Any:
    """The LoRA whose training name (ss_output_name, A1111's alias) is `name`, when exactly one has it."""
    found = []
    for entry in catalog.of_kind(NAME):
        if entry.format == "file":
            try:
                if read_header(entry.path).metadata.get("ss_output_name", "").strip() == name.strip():
                    found.append(entry)
            except (OSError, ValueError):
                continue
    return found[0] if len(found) == 1 else None


def adapter_name(entry: Any) -> str:
    """The PEFT adapter name of a file's weights: one per file version (a module name: no dots)."""
    stamp = entry.path.stat().st_mtime if entry.path.exists() else 0
    return "kiri_" + hashlib.sha1(f"{entry.path}:{stamp}".encode()).hexdigest()[:12]


class LoraSet(Addon):
    """The LoRAs of one job, switched on for each of its calls and off after."""

    name = NAME

    def __init__(self, uses: list[LoraUse]):
        self.uses = uses
        self.entries: list[Any] = []  # the catalog entries, in the order of `uses`
        self.weights: list[tuple[float, float]] = []  # (text encoder, denoiser) per use
        self.hashes: list[str] = []
        self.adapters: list[str] = []
        self._loaded: dict[str, LoraWeights] = {}
        self._parts: dict[str, list[str]] = {}  # adapter -> the model's modules it is in (per-model state)

    @classmethod
    def from_settings(cls, value: Any) -> "LoraSet | None":
        uses = parse(value)
        return cls(uses) if uses else None

    # when built (before the job is queued): the names
    def check(self, catalog: Any) -> None:
        for use in self.uses:
            find(catalog, use.name)

    # per job: the files, read once through the model manager, checked against the model's family
    @contextmanager
    def job(self, ctx: Any, model: Any, request: Any) -> Iterator[None]:
        try:
            default = checked_multiplier(SETTING, getattr(ctx.settings, SETTING, 1.0))
        except InvalidRequest:  # a hand-edited settings file
            default = 1.0
        self.entries = [find(ctx.catalog, use.name) for use in self.uses]
        self.weights = [use.weights(default) for use in self.uses]
        family = getattr(model, "family", None)
        for use, entry in zip(self.uses, self.entries):
            if entry.problem:
                raise InvalidRequest(FIELD, f"the LoRA {entry.name!r} ({entry.path.name}) cannot be used: {entry.problem}")
            weights = ctx.models.get_of_kind(NAME, entry.name).model
            self._loaded[entry.name] = weights
            if weights.family and family and weights.family != family:
                raise InvalidRequest(FIELD, f"the LoRA {entry.name!r} is a {family_label(weights.family)} LoRA and "
                                            f"{model.name} is a {family_label(family)} model: use a LoRA made for "
                                            f"{family_label(family)}")
            denoiser = weights.denoiser
            if denoiser is not None and getattr(model.pipeline, denoiser, None) is None:
                made_for = "a UNet model (SD 1.x, SD 2.x, SDXL)" if denoiser == "unet" else "a transformer model (SD3, Flux)"
                raise InvalidRequest(FIELD, f"the LoRA {entry.name!r} is made for {made_for} and {model.name} is a "
                                            f"{family_label(family)} model ({type(model.pipeline).__name__})")
        self.hashes = [addnet_hash(entry.path)[:12] for entry in self.entries]
        self.adapters = [adapter_name(entry) for entry in self.entries]
        yield

    # per model: each file injected once into the checkpoint's modules as a PEFT adapter
    def state_key(self) -> Any:
        if not self.entries:
            return None
        return tuple(sorted(self.adapters))

    def load_state(self, ctx: Any, model: Any) -> Any:
        pipeline = model.pipeline
        added: dict[str, Any] = {}
        for entry, adapter in zip(self.entries, self.adapters):
            if adapter in _present(pipeline):
                continue
            added[adapter] = inject(pipeline, self._loaded[entry.name], adapter, entry)
        # which of the model's modules each adapter landed in (a LoRA without text encoder weights: the
        # denoiser only), so a pipeline built over other modules (AnimateDiff's motion UNet) gets them too
        parts = {adapter: [name for name, module in _components(pipeline) if adapter in _adapters_of(module)]
                 for adapter in self.adapters}
        return {"adapters": list(self.adapters), "parts": parts, "weights": added}

    def use_state(self, state: Any) -> None:
        self._parts = dict(state.get("parts", {}))

    # per call: this job's adapters on, at their weights; every adapter off after
    def apply(self, call: Any) -> None:
        pipeline = call.pipeline
        for entry, adapter in zip(self.entries, self.adapters):
            wanted = self._parts.get(adapter) or [name for name, _ in _components(pipeline)]
            missing = [name for name, module in _components(pipeline) if name in wanted and adapter not in _adapters_of(module)]
            if missing:  # a pipeline over modules of its own (AnimateDiff's motion UNet, a native video model)
                inject(pipeline, self._loaded[entry.name], adapter, entry, missing)
        switch(pipeline, list(zip(self.adapters, self.weights)))
        call.infotext.update(self.infotext())

    def release(self, call: Any) -> None:
        switch(call.pipeline, [])

    def infotext(self) -> dict[str, object]:
        if not self.entries:
            return {}
        # A1111 writes the name as the prompt gave it, without ':' and ','
        names = [use.name.translate(str.maketrans("", "", ":,")) for use in self.uses]
        return {"Lora hashes": ", ".join(f"{name}: {short}" for name, short in zip(names, self.hashes))}


def _components(pipeline: Any) -> list[tuple[str, Any]]:
    names = getattr(pipeline, "_lora_loadable_modules", None) or ["unet", "transformer", "text_encoder", "text_encoder_2"]
    return [(name, getattr(pipeline, name)) for name in names if getattr(pipeline, name, None) is not None]


def _adapters_of(module: Any) -> set[str]:
    return set(getattr(module, "peft_config", None) or {})


def _present(pipeline: Any) -> set[str]:
    """The adapters injected into any of the pipeline's LoRA-loadable modules."""
    found: set[str] = set()
    for _, module in _components(pipeline):
        found.update(_adapters_of(module))
    return found


def inject(pipeline: Any, weights: LoraWeights, adapter: str, entry: Any, parts: list[str] | None = None) -> dict[str, Any]:
    """`weights` as the PEFT adapter `adapter` in the pipeline's modules (left off), or only in `parts` (the
    denoiser of a pipeline whose text encoders are the model's and have it already); the adapter's own
    tensors (what it adds to memory). A file diffusers cannot read, or that fits none of the modules:
    InvalidRequest naming the file and its format, with nothing left behind."""
    from .files import unsupported_format

    lyco = unsupported_format(weights.state)
    if lyco is not None:
        raise InvalidRequest(FIELD, f"the LoRA {entry.name!r} ({entry.path.name}) is a {lyco} file, which diffusers "
                                    "cannot load; LoRA, LoCon and diffusers/PEFT LoRA files can be used")
    if not hasattr(pipeline, "load_lora_weights"):
        raise InvalidRequest(FIELD, f"{type(pipeline).__name__} cannot use LoRAs ({entry.name})")
    every = [name for name, _ in _components(pipeline)]
    before = {name: _adapters_of(module) for name, module in _components(pipeline)}
    try:
        with _quiet():
            if parts is None or set(parts) >= set(every):
                pipeline.load_lora_weights(dict(weights.state), adapter_name=adapter)
            elif parts == ["unet"] and hasattr(pipeline, "load_lora_into_unet"):
                state, alphas, metadata = pipeline.lora_state_dict(dict(weights.state), return_lora_metadata=True)
                pipeline.load_lora_into_unet(state, network_alphas=alphas, unet=pipeline.unet, adapter_name=adapter,
                                             metadata=metadata, _pipeline=pipeline)
            else:
                raise InvalidRequest(FIELD, f"{type(pipeline).__name__} shares some of the model's modules and not "
                                            f"others ({', '.join(parts)}): the LoRA {entry.name!r} cannot be added to it")
    except InvalidRequest:
        raise
    except Exception as exc:  # noqa: BLE001 - diffusers' refusals come as ValueError, RuntimeError, KeyError, PEFT's own
        _remove(pipeline, adapter, before)
        reason = str(exc).strip().splitlines()
        raise InvalidRequest(FIELD, f"the LoRA {entry.name!r} ({entry.path.name}, {weights.format} keys) does not fit "
                                    f"this model: {(reason[0] if reason else type(exc).__name__)[:300]}") from exc
    if adapter not in _present(pipeline):
        raise InvalidRequest(FIELD, f"the LoRA {entry.name!r} ({entry.path.name}, {weights.format} keys) has no weights "
                                    "for this model's layers")
    switch(pipeline, [])
    tensors: dict[str, Any] = {}
    for name, module in _components(pipeline):
        if adapter in _adapters_of(module) and adapter not in before[name]:
            for key, param in module.named_parameters():
                if f".{adapter}." in key:
                    tensors[f"{name}.{key}"] = param
    return tensors


@contextmanager
def _quiet() -> Iterator[None]:
    """Without transformers' load report (each adapter's load lists the other adapters' weights as missing)
    and PEFT's warning that a module holds several adapters: both are what switching per call means."""
    import warnings

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*peft_config.*")
            yield
    finally:
        hf_logging.set_verbosity(level)


def _remove(pipeline: Any, adapter: str, before: dict[str, set[str]]) -> None:
    """A half-loaded adapter taken out of the modules that did not hold it before (a failed load must leave
    the model as it was)."""
    from diffusers.loaders.peft import PeftAdapterMixin

    for name, module in _components(pipeline):
        if adapter not in _adapters_of(module) or adapter in before.get(name, set()):
            continue
        try:
            if isinstance(module, PeftAdapterMixin):
                module.delete_adapters([adapter])
            else:
                from diffusers.utils.peft_utils import delete_adapter_layers

                delete_adapter_layers(module, adapter)
        except Exception:  # noqa: BLE001 - best effort after a failed load
            log.exception("could not remove the half-loaded LoRA adapter %s from %s", adapter, name)


def switch(pipeline: Any, active: list[tuple[str, tuple[float, float]]]) -> None:
    """Turn on exactly `active` ((adapter, (text encoder weight, denoiser weight))) in each module that
    holds them; a module with none of them at a weight other than 0 is switched off (the plain checkpoint)."""
    from diffusers.loaders.lora_base import (disable_lora_for_text_encoder, enable_lora_for_text_encoder,
                                             set_adapters_for_text_encoder)

    for name, module in _components(pipeline):
        present = getattr(module, "peft_config", None)
        if not present:
            continue
        text = name.startswith("text_encoder")
        pairs = [(adapter, te if text else unet) for adapter, (te, unet) in active if adapter in present]
        pairs = [(adapter, weight) for adapter, weight in pairs if weight != 0]
        if text:
            if pairs:
                enable_lora_for_text_encoder(module)
                set_adapters_for_text_encoder([a for a, _ in pairs], module, [w for _, w in pairs])
            else:
                disable_lora_for_text_encoder(module)
        elif pairs:
            module.enable_lora()
            module.set_adapters([a for a, _ in pairs], [w for _, w in pairs])
        else:
            module.disable_lora()


def preview_of(path: Any) -> str | None:
    """A picture beside the file (`<name>.preview.png`, `<name>.png`, ...), as A1111's cards read it."""
    found = shared_preview_of(path)
    return str(found) if found is not None else None


def list_loras(catalog: Any) -> list[dict[str, Any]]:
    """Every LoRA as A1111's /sdapi/v1/loras lists it (name, alias, path, metadata), plus Kiri's family,
    preview (a picture beside the file, or None), problem (why it cannot be used) and preferred weight."""
    out = []
    for entry in catalog.of_kind(NAME):
        metadata: dict[str, str] = {}
        if entry.format == "file":
            try:
                metadata = read_header(entry.path).metadata
            except (OSError, ValueError):
                pass
        parsed = parsed_metadata(metadata)
        out.append({
            "name": entry.name,
            "alias": metadata.get("ss_output_name") or entry.name,
            "path": str(entry.path),
            "metadata": parsed,
            "family": entry.family,
            "preview": preview_of(entry.path),
            "problem": entry.problem,
            "preferred_weight": _preferred_weight(entry.path, parsed),
        })
    return out


def _preferred_weight(path: Any, metadata: dict[str, Any]) -> float | None:
    """A1111's user metadata (`<name>.json` beside the file: "preferred weight"), else the file's
    `ss_preferred_weight`/`modelspec.preferred_weight`; None when nothing says."""
    import json

    values = []
    try:
        values.append(json.loads(path.with_suffix(".json").read_text()).get("preferred weight"))
    except (OSError, ValueError, AttributeError):
        pass
    values += [metadata.get("ss_preferred_weight"), metadata.get("modelspec.preferred_weight")]
    for value in values:
        try:
            if value not in (None, "", 0, "0"):
                return float(value)
        except (TypeError, ValueError):
            continue
    return None


def register(registries: Any) -> None:
    """Called by bootstrap.build_registries, as an extension's entry would: the LoRA kind (models/Lora/,
    models/LyCORIS/), its loader, and the add-on that reads `<lora:...>` and `<lyco:...>` tags."""
    from webui.engine.models.catalog import ModelKind

    registries.add_model_kind(ModelKind(NAME, ("Lora", "lora", "LyCORIS"), describe_lora, "LoRA"))
    registries.add_loader(NAME, load_weights)
    registries.add_addon(AddonSpec(NAME, LoraSet.from_settings, INFOTEXT_KEYS, prompt_tags=TAG_KINDS, from_tags=from_tags))

