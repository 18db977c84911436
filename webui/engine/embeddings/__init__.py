"""Textual inversion embeddings, as the add-on "embeddings": a file in `embeddings/` (A1111's
folder, beside models/, subfolders too) or `models/embeddings/` is used by writing its name in the
prompt, as in AUTOMATIC1111 (the file stem is the word, in any case; ComfyUI's `embedding:word` too),
on SD 1.x, 2.x and SDXL (clip_l into the first encoder, clip_g into the second). Its infotext key is
A1111's `TI hashes: "name: hash, ..."`.

Lifetimes (core/addons.py):
  per model  every embedding that fits the checkpoint's text encoders is loaded into it once, with
             diffusers' load_textual_inversion (model.py), and kept with the loaded checkpoint; the
             key is the embedding files (path, size, mtime) as the catalog's last scan found them, so
             a new or changed file is picked up after a refresh. One of another width (an SDXL one on
             SD 1.x, 768 vs 1024) is skipped and listed under `skipped`, as A1111 does.
  per call   the prompt schedule's texts get each used word written as its tokens (one per vector,
             model.expand), before the conditioning stage encodes them; the embeddings used go into
             the infotext; a word of a skipped embedding gets a warning naming the families (it is
             read as plain words).

A1111 applies embeddings to every prompt without asking: the add-on is on for every request, from
the `use_embeddings` setting (on by default). Off, or a request's `{"embeddings": false}`, puts the
tokenizers and encoders back as loaded from disk.

Public: `register`, `list_embeddings(engine_or_catalog, model)` (the extra-networks panel's cards),
`api_listing(engine)` (/sdapi/v1/embeddings), `refresh(engine)`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from webui.engine.core.addons import Addon, AddonSession, AddonSpec
from webui.engine.core.errors import InvalidRequest

from .files import KIND, describe_embedding, embedding_entries, load_file, preview_of, read_cached, weights_path
from .model import Known, ModelEmbeddings, encoders, expand, load_into, survey, widths_of_entry

__all__ = ["FIELD", "INFOTEXT_KEY", "NAME", "SETTING", "Embeddings", "api_listing", "list_embeddings", "refresh", "register"]

NAME = "embeddings"
FIELD = "embeddings"
SETTING = "use_embeddings"
INFOTEXT_KEY = "TI hashes"
# Under models/, then A1111's folder at the project root (models/../embeddings).
FOLDERS = ("embeddings", "../embeddings")


def parse(value: Any) -> bool:
    """A request's or the setting's value -> on or off."""
    if isinstance(value, dict):
        value = value.get("enabled", True)
    if isinstance(value, str) and value.strip().lower() in ("on", "off", "true", "false"):
        return value.strip().lower() in ("on", "true")
    if isinstance(value, bool):
        return value
    raise InvalidRequest(FIELD, f"embeddings must be true or false (got {value!r})")


class Embeddings(Addon):
    name = NAME

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.ctx: Any = None
        self.family: str | None = None  # the model's family label, for messages
        self.state: ModelEmbeddings | None = None

    @classmethod
    def from_settings(cls, value: Any) -> "Embeddings":
        return cls(parse(value))

    # per job: the model and the services; what is loaded is per model
    @contextmanager
    def job(self, ctx: Any, model: Any, request: Any) -> Iterator[None]:
        from webui.engine.models.families import FAMILIES

        self.ctx = ctx
        self.family = FAMILIES.get(getattr(model, "family", "") or "", None)
        yield

    # per model: every embedding that fits, loaded into the checkpoint's tokenizers and encoders
    def state_key(self) -> Any:
        if self.ctx is None:
            return None
        if not self.enabled:
            return ("off",)
        files = []
        for entry in embedding_entries(self.ctx.catalog):
            try:
                st = weights_path(entry).stat()
            except OSError:
                continue
            files.append((str(entry.path), entry.name, st.st_size, st.st_mtime_ns))
        return ("on", bool(self.ctx.models.allow_pickle), tuple(files))

    def load_state(self, ctx: Any, model: Any) -> dict[str, Any]:
        key = self.state_key()
        _drop_stale(model, self, key)
        state = load_into(model.pipeline, ctx.catalog, bool(ctx.models.allow_pickle), self.family, key, self.enabled)
        # The vectors beside the state, so the seam counts their bytes in the memory budget.
        return {"embeddings": state, "tensors": list(state.tensors)}

    def use_state(self, state: Any) -> None:
        self.state = state["embeddings"]

    # per call: the words written as their tokens, the infotext, warnings for skipped ones
    def apply(self, call: Any) -> None:
        if self.state is None or self.state.pattern is None:
            return
        used: dict[str, Known] = {}
        skipped: dict[str, Known] = {}
        schedule = getattr(call, "conditioning", None)
        if schedule is not None:  # the conditioning stage encodes these texts after every apply()
            entries = []
            for entry in schedule.entries:
                changes = {}
                for field in ("prompt", "negative"):
                    text = getattr(entry, field, None)
                    if isinstance(text, str):
                        changes[field] = expand(text, self.state, used, skipped)
                entries.append(_replace(entry, changes))
            schedule.entries = entries
        else:  # a pipeline that encodes its prompt itself: the texts it is handed (a dict of them for prompt travel)
            # diffusers' own encode_prompt writes a multi-vector embedding's other tokens after its first
            first = hasattr(call.pipeline, "maybe_convert_prompt")
            for name in ("prompt", "negative_prompt"):
                value = call.kwargs.get(name)
                if isinstance(value, str):
                    call.kwargs[name] = expand(value, self.state, used, skipped, first)
                elif isinstance(value, dict):
                    call.kwargs[name] = {k: expand(v, self.state, used, skipped, first) if isinstance(v, str) else v
                                         for k, v in value.items()}
        if used:
            # A1111's: "name: hash, ...", each name without the separators the infotext uses
            call.infotext[INFOTEXT_KEY] = ", ".join(
                f"{k.name.replace(':', '').replace(',', '')}: {k.short_hash}" for k in used.values())
        warnings = getattr(call, "warnings", None)
        if warnings is not None:
            for known in skipped.values():
                text = f"The embedding {known.name!r} was not used ({known.reason}): it was read as plain words."
                if text not in warnings:
                    warnings.append(text)


def _replace(entry: Any, changes: dict[str, str]) -> Any:
    from dataclasses import is_dataclass, replace

    if not changes:
        return entry
    if is_dataclass(entry):
        return replace(entry, **changes)
    for name, value in changes.items():
        setattr(entry, name, value)
    return entry


def _drop_stale(model: Any, addon: Any, key: Any) -> None:
    """Forget this add-on's earlier states on the model (another key): only one can be in its tokenizers,
    and their bytes must stop counting in the memory budget."""
    derived = getattr(model, "derived", None)
    if not derived:
        return
    sizes = derived.get((AddonSession.DERIVED, "bytes"), {})
    for slot in [s for s in derived if isinstance(s, tuple) and len(s) == 3 and s[:2] == (AddonSession.DERIVED, NAME)]:
        if slot[2] != key:
            derived.pop(slot, None)
            sizes.pop(slot, None)


# --- what the UI and the API list --------------------------------------------------------------

def _catalog(engine_or_catalog: Any) -> tuple[Any, bool]:
    catalog = getattr(engine_or_catalog, "catalog", engine_or_catalog)
    models = getattr(engine_or_catalog, "models_if_created", None)
    manager = models() if callable(models) else None
    settings = getattr(engine_or_catalog, "settings", None)
    allow = manager.allow_pickle if manager is not None else bool(getattr(settings, "allow_pickle", False))
    if not catalog.entries:  # never scanned (a scan finds the checkpoints too)
        catalog.scan()
    return catalog, allow


def _fit_for(model: Any, catalog: Any) -> tuple[list, str | None]:
    """(encoders, family label) of a loaded model, a catalog entry, a checkpoint's name, or None."""
    from webui.engine.models.families import FAMILIES

    if model is None:
        return [], None
    if isinstance(model, str):
        model = catalog.find(model)
        if model is None:
            return [], None
    pipeline = getattr(model, "pipeline", None)
    if pipeline is not None:
        return encoders(pipeline), FAMILIES.get(getattr(model, "family", "") or "")
    return widths_of_entry(model), FAMILIES.get(getattr(model, "family", "") or "")


def list_embeddings(engine_or_catalog: Any, model: Any = None) -> list[dict[str, Any]]:
    """Every embedding file, for cards: name (the prompt word), path, vectors, shape (A1111's: the
    width, both SDXL encoders' together), family it was made for, preview picture beside it (or None),
    and for `model` (a loaded model, a catalog entry or a checkpoint's name) whether it fits and why not."""
    catalog, allow = _catalog(engine_or_catalog)
    found, family = _fit_for(model, catalog)
    state = survey(catalog, allow, found, family) if model is not None else None
    cards = []
    for entry in embedding_entries(catalog):
        stem = entry.path.name if entry.path.is_dir() else entry.path.stem
        card: dict[str, Any] = {"name": stem, "path": str(entry.path), "vectors": None, "shape": None, "family": None,
                                "step": None, "preview": None, "error": None}
        preview = preview_of(entry)
        card["preview"] = str(preview) if preview is not None else None
        try:
            file = read_cached(entry, allow)
            card.update(vectors=file.count, shape=file.shape, family=file.family, step=file.step)
        except Exception as exc:  # noqa: BLE001 - listed with the reason
            card["error"] = str(exc)
        if state is not None:
            known = next((k for k in state.loaded.values() if k.entry.path == entry.path), None)
            card["compatible"] = known is not None
            if known is None:
                other = next((k for k in state.skipped.values() if k.entry.path == entry.path), None)
                card["reason"] = other.reason if other is not None else None
        cards.append(card)
    return cards


def api_listing(engine: Any) -> dict[str, dict[str, Any]]:
    """A1111's /sdapi/v1/embeddings for the current model: {"loaded": {name: {step, sd_checkpoint,
    sd_checkpoint_name, shape, vectors}}, "skipped": {...}}: what the current model loads (the loaded
    one's encoders, else the selected checkpoint's configs); nothing is loaded by asking."""
    from webui.engine.core.errors import KiriError

    catalog, allow = _catalog(engine)
    manager = engine.models_if_created()
    try:
        model = manager.current if manager is not None and manager.current is not None else engine.current_entry()
        found, family = _fit_for(model, catalog)
    except KiriError:  # no checkpoint at all: nothing to fit them to
        found, family = None, None
    state = survey(catalog, allow, found, family)
    return {"loaded": {k.name: k.a1111() for k in state.loaded.values()},
            "skipped": {k.name: k.a1111() for k in state.skipped.values()}}


def refresh(engine: Any) -> None:
    """Find new and changed embedding files; each model loads them before its next generation."""
    engine.catalog.scan()


def register(registries: Any) -> None:
    """Called by bootstrap.build_registries: the embedding kind (embeddings/ and models/embeddings/), its
    loader (the vectors of one file, with the pickle policy), and the add-on, on unless the
    `use_embeddings` setting is off."""
    from webui.engine.models.catalog import ModelKind

    registries.add_model_kind(ModelKind(KIND, FOLDERS, describe_embedding, "Embedding"))
    registries.add_loader(KIND, lambda entry, device, allow_pickle: load_file(entry, allow_pickle))
    registries.add_addon(AddonSpec(NAME, Embeddings.from_settings, (INFOTEXT_KEY,),
                                   default=lambda settings: "on" if getattr(settings, SETTING, True) else "off"))
