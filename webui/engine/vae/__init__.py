"""VAE selection: decode (and encode) with another VAE than the checkpoint's own, per request, as
the add-on "vae"; AUTOMATIC1111's `sd_vae` option and its infotext keys `VAE hash` and `VAE`.

A request names it in `addons` by one of:

    {"vae": "Automatic"}      a VAE named like the checkpoint (`<checkpoint>.vae.safetensors` beside it
                              or in models/VAE/), else the checkpoint's own; what the `sd_vae` setting
                              gives a request that names none, unless the setting says otherwise
    {"vae": "None"}           the checkpoint's own VAE
    {"vae": "<name>"}         that VAE from models/VAE/: its name, or its file name as A1111 lists it

Lifetimes (core/addons.py): per job, the name is resolved and the file's weights are read through the
model manager (loader "vae", files.py), refused when the VAE's latent channels differ from the model's;
per model, an AutoencoderKL with those weights in the checkpoint's VAE config, dtype and device, kept
with the loaded checkpoint and dropped with it; per call, it is the pipeline's `vae` component
(PipelineCall puts the shared one back after the call), so everything the call decodes or encodes
uses it: the pictures, an img2img source, the hires fix's second pass. Live previews fitted to the
model's VAE are fitted to the one the call swapped in (generation/preview.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from webui.engine.core.addons import Addon, AddonSpec
from webui.engine.core.errors import InvalidRequest

from .files import VaeWeights, build_for, describe_vae, load_weights, stem_of

__all__ = ["AUTOMATIC", "FIELD", "INFOTEXT_KEYS", "NAME", "NONE", "VaeChoice", "checked_setting", "choices", "find", "parse",
           "register"]

NAME = "vae"
FIELD = "sd_vae"  # A1111's option name: the field errors name
AUTOMATIC, NONE = "Automatic", "None"
INFOTEXT_KEYS = ("VAE hash", "VAE")


def parse(value: Any) -> str | None:
    """A request's or the setting's value -> "Automatic", a VAE name, or None for the checkpoint's own."""
    if value is None or value == "":
        return AUTOMATIC
    if isinstance(value, dict):
        value = value.get("name")
    if not isinstance(value, str):
        raise InvalidRequest(FIELD, f"the VAE must be {AUTOMATIC!r}, {NONE!r} or a VAE's name (got {value!r})")
    text = value.strip()
    if text.lower() == AUTOMATIC.lower():
        return AUTOMATIC
    if text.lower() == NONE.lower():
        return None
    return text


def choices(catalog: Any) -> list[str]:
    """What a picker offers: Automatic, None, then every VAE by name."""
    return [AUTOMATIC, NONE, *[entry.name for entry in catalog.of_kind("vae")]]


def find(catalog: Any, name: str) -> Any:
    """The VAE entry called `name` (its name or file name), rescanning once; unknown: InvalidRequest."""
    entry = catalog.find_of_kind("vae", name)
    if entry is None:
        catalog.scan()
        entry = catalog.find_of_kind("vae", name)
    if entry is None:
        known = ", ".join(choices(catalog))
        raise InvalidRequest(FIELD, f"unknown VAE {name!r}; available: {known} (put VAE files in models/VAE/)")
    return entry


def checked_setting(catalog: Any, value: Any) -> str:
    """A value for the `sd_vae` setting: "Automatic", "None" or a known VAE's name (unknown: InvalidRequest)."""
    wanted = parse(value)
    if wanted is None:
        return NONE
    return AUTOMATIC if wanted == AUTOMATIC else find(catalog, wanted).name


def automatic(catalog: Any, model: Any, allow_pickle: bool) -> Any:
    """A1111's Automatic: a VAE named like the checkpoint, the one beside it first; None when there is none."""
    wanted = model.entry.path.stem if model.entry.path.is_file() else model.entry.name
    found = [e for e in catalog.of_kind("vae") if stem_of(e.path.stem if e.path.is_file() else e.name) == wanted
             and (allow_pickle or e.format != "pickle")]
    found.sort(key=lambda e: e.path.parent != model.entry.path.parent)  # beside the checkpoint first
    return found[0] if found else None


class VaeChoice(Addon):
    name = NAME

    def __init__(self, wanted: str):
        self.wanted = wanted  # "Automatic" or a name
        self.entry: Any = None  # the VAE this job uses; None: the checkpoint's own
        self.short_hash: str | None = None
        self.vae: Any = None  # this batch's module, for the model of this batch

    @classmethod
    def from_settings(cls, value: Any) -> "VaeChoice | None":
        wanted = parse(value)
        return None if wanted is None else cls(wanted)

    # per job: which VAE, its weights read once (the model manager's cache), checked against the model
    @contextmanager
    def job(self, ctx: Any, model: Any, request: Any) -> Iterator[None]:
        if self.wanted == AUTOMATIC:
            self.entry = automatic(ctx.catalog, model, ctx.models.allow_pickle)
        else:
            self.entry = find(ctx.catalog, self.wanted)
        if self.entry is not None:
            weights = self._weights(ctx)
            own = getattr(getattr(model.pipeline, "vae", None), "config", None)
            if own is None:
                raise InvalidRequest(FIELD, f"{model.name}'s pipeline has no VAE to replace")
            if weights.latent_channels != own.latent_channels:
                raise InvalidRequest(FIELD, f"the VAE {self.entry.name!r} decodes {weights.latent_channels} latent "
                                            f"channels and {model.name} makes {own.latent_channels}: choose a VAE of "
                                            f"its family, or {AUTOMATIC!r}")
            self.short_hash = ctx.catalog.hashes.sha256(_hash_source(self.entry))[:10]
        yield

    def _weights(self, ctx: Any) -> VaeWeights:
        return ctx.models.get_of_kind(NAME, self.entry.name).model

    # per model: the module, in the checkpoint's VAE config, dtype and device
    def state_key(self) -> Any:
        if self.entry is None:
            return None
        return (str(self.entry.path), self.entry.path.stat().st_mtime if self.entry.path.exists() else 0)

    def load_state(self, ctx: Any, model: Any) -> Any:
        return build_for(self._weights(ctx), model.pipeline.vae, self.entry.name)

    def use_state(self, state: Any) -> None:
        self.vae = state

    # per call: the pipeline's vae for this call only
    def apply(self, call: Any) -> None:
        if self.vae is None:
            return
        shared = next(call.pipeline.vae.parameters())
        mine = next(self.vae.parameters())
        if mine.device != shared.device:  # the checkpoint moved (another was loaded on the GPU meanwhile)
            self.vae.to(shared.device)
        call.components["vae"] = self.vae
        call.infotext.update(self.infotext())

    def infotext(self) -> dict[str, object]:
        if self.entry is None:
            return {}
        return {"VAE hash": self.short_hash, "VAE": self.entry.name}


def _hash_source(entry: Any) -> Any:
    """The file whose sha256 is the VAE hash: the file, or a folder's weights."""
    if entry.path.is_file():
        return entry.path
    for weights in sorted(entry.path.glob("*.safetensors")) or sorted(entry.path.glob("*.bin")):
        return weights
    return entry.path / "config.json"


def register(registries: Any) -> None:
    """Called by bootstrap.build_registries, as an extension's entry would: the VAE kind (models/VAE/ and
    `*.vae.*` beside checkpoints), its loader, and the add-on with the `sd_vae` setting as its default."""
    from webui.engine.models.catalog import ModelKind

    registries.add_model_kind(ModelKind(NAME, ("vae", "VAE", "checkpoints", "Stable-diffusion"), describe_vae, "VAE"))
    registries.add_loader(NAME, load_weights)
    registries.add_addon(AddonSpec(NAME, VaeChoice.from_settings, INFOTEXT_KEYS,
                                   default=lambda settings: getattr(settings, "sd_vae", AUTOMATIC) or AUTOMATIC))
