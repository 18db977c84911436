"""Embeddings in a loaded checkpoint: which ones fit its text encoders, loading them with diffusers'
`load_textual_inversion` (new tokens in the tokenizer, new rows in the text encoder's input
embeddings: the original rows are never written, so a prompt without an embedding's word encodes
exactly as before), and putting the tokenizer and the encoder back as they were.

The prompt word is the file's stem in any case, a whole word (`cat` in `concatenate` is plain text,
as in A1111). The tokenizer's new tokens are not the words: `expand()` writes each word of a loaded
embedding as its tokens (`kiriti_word- kiriti_word-_1 ...`, one per vector), so any file name works
(one that is a CLIP word piece, holds brackets or colons the prompt language reads, or differs only
in case), a prompt without a word tokenizes exactly as before, and with the add-on off nothing in a
prompt reaches the tokens. (diffusers' `maybe_convert_prompt` would do the expanding for names that
are tokens, but it replaces the lower-cased token as a substring of the text: `EasyNegative` kept one
vector of eight, and `x` expanded inside `x_1` again.)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Hashable

from .files import SDXL_KEYS, EmbeddingFile, embedding_entries, family_of, read_cached, weights_path

log = logging.getLogger(__name__)

__all__ = ["Encoder", "Known", "ModelEmbeddings", "encoders", "expand", "load_into", "restore", "survey", "widths_of_entry"]

# Where Kiri keeps what it did to a tokenizer: the state loaded into it, and the original to go back to.
STATE_ATTR, ORIGINAL_ATTR = "_kiri_embeddings", "_kiri_embeddings_original"
# The tokenizer's tokens for an embedding: kiriti_<word>-, kiriti_<word>-_1, ... The `-` ends the first one,
# so no embedding's first token begins another's (diffusers' maybe_convert_prompt replaces substrings).
TOKEN_PREFIX, TOKEN_END = "kiriti_", "-"
# Vector widths of the released text encoders per family, for a model that is not loaded.
FAMILY_WIDTHS = {"sd1": [("", 768)], "sd2": [("", 1024)], "sdxl": [("clip_l", 768), ("clip_g", 1280)]}


@dataclass
class Encoder:
    slot: str  # "" (one encoder), "clip_l" or "clip_g": which vectors of a file it takes
    width: int
    tokenizer: Any = None
    text_encoder: Any = None


@dataclass
class Known:
    """One embedding as a model sees it: loaded (reason None) or skipped and why."""

    name: str  # the word
    entry: Any
    file: EmbeddingFile | None
    reason: str | None = None
    short_hash: str | None = None
    token: str = ""  # the first of its tokens in the tokenizer (set when it is loaded)

    def tokens(self) -> list[str]:
        return [self.token] + [f"{self.token}_{i}" for i in range(1, self.file.count if self.file else 1)]

    def a1111(self) -> dict[str, Any]:
        """A1111's /sdapi/v1/embeddings entry."""
        f = self.file
        return {"step": f.step if f else None, "sd_checkpoint": f.sd_checkpoint if f else None,
                "sd_checkpoint_name": f.sd_checkpoint_name if f else None,
                "shape": f.shape if f else None, "vectors": f.count if f else 0}


@dataclass
class ModelEmbeddings:
    """The per-model state: what is loaded into this checkpoint's tokenizers and text encoders."""

    key: Hashable
    loaded: dict[str, Known] = field(default_factory=dict)  # by word, in lower case
    skipped: dict[str, Known] = field(default_factory=dict)
    tensors: list[Any] = field(default_factory=list)  # the vectors added (what the memory budget counts)
    pattern: Any = None  # matches every known word (loaded or skipped), whole words, any case


def encoders(pipeline: Any) -> list[Encoder]:
    """The CLIP text encoders an embedding goes into (SD 1.x/2.x: one; SDXL: clip_l and clip_g);
    [] for a pipeline that does not read embeddings (SD3, Flux, PixArt, video pipelines)."""
    name = type(pipeline).__name__
    if not name.startswith(("StableDiffusion", "AnimateDiff")) or name.startswith("StableDiffusion3"):
        return []
    pairs = [(getattr(pipeline, "tokenizer", None), getattr(pipeline, "text_encoder", None))]
    if getattr(pipeline, "text_encoder_2", None) is not None:
        pairs.append((getattr(pipeline, "tokenizer_2", None), pipeline.text_encoder_2))
    if any(t is None or e is None or not hasattr(t, "_tokenizer") for t, e in pairs):
        return []
    slots = [""] if len(pairs) == 1 else list(SDXL_KEYS)
    return [Encoder(slot, int(e.get_input_embeddings().weight.shape[-1]), t, e) for slot, (t, e) in zip(slots, pairs)]


def widths_of_entry(entry: Any) -> list[Encoder]:
    """The encoders of a checkpoint that is not loaded: its folder's configs, else its family's."""
    import json

    if entry is None or (entry.family or "") not in FAMILY_WIDTHS:
        return []
    if entry.path.is_dir():
        found = []
        for sub in ("text_encoder", "text_encoder_2"):
            try:
                found.append(int(json.loads((entry.path / sub / "config.json").read_text())["hidden_size"]))
            except (OSError, ValueError, KeyError, TypeError):
                break
        if found:
            slots = [""] if len(found) == 1 else list(SDXL_KEYS)
            return [Encoder(slot, width) for slot, width in zip(slots, found)]
    return [Encoder(slot, width) for slot, width in FAMILY_WIDTHS.get(entry.family or "", [])]


def fits(file: EmbeddingFile, found: list[Encoder]) -> bool:
    """Whether the file has vectors for each of these encoders, each of its width."""
    if set(file.vectors) != {e.slot for e in found}:
        return False
    return all(int(file.vectors[e.slot].shape[-1]) == e.width for e in found)


def model_label(found: list[Encoder], family: str | None) -> str:
    if family:
        return family
    return family_of([e.slot for e in found], found[0].width) if found else "this model"


def survey(catalog: Any, allow_pickle: bool, found: list[Encoder] | None, family: str | None, key: Hashable = None,
           hashes: Any = None) -> ModelEmbeddings:
    """Every embedding in the catalog, loaded or skipped (and why) for a model with these encoders
    (None: no model to fit, every readable one counts as loaded, as A1111 lists them before a model
    is loaded). Nothing is loaded into any model."""
    from webui.engine.core.errors import PickleRefused

    state = ModelEmbeddings(key)
    label = model_label(found or [], family)
    for entry in embedding_entries(catalog):
        stem = entry.path.name if entry.path.is_dir() else entry.path.stem
        name = entry.name
        try:
            file = read_cached(entry, allow_pickle)
        except PickleRefused as exc:
            state.skipped.setdefault(stem.lower(), Known(stem, entry, None, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one bad file is listed, never stops the others
            state.skipped.setdefault(stem.lower(), Known(stem, entry, None, str(exc)))
            continue
        if name != stem or stem.lower() in state.loaded or stem.lower() in state.skipped:
            state.skipped.setdefault(f"{stem.lower()} ({entry.path})", Known(
                stem, entry, file, f"another embedding is called {stem!r} already (the first one found is used)"))
            continue
        if found is not None and not found:
            state.skipped[stem.lower()] = Known(stem, entry, file, f"{label} does not read textual inversion embeddings")
        elif found is not None and not fits(file, found):
            state.skipped[stem.lower()] = Known(stem, entry, file, f"made for {file.family}, and this model is {label}")
        else:
            short = hashes.sha256(weights_path(entry))[:12] if hashes is not None else None
            state.loaded[stem.lower()] = Known(stem, entry, file, None, short)
    words = sorted({k.name for k in [*state.loaded.values(), *state.skipped.values()]}, key=len, reverse=True)
    if words:
        # The word alone, or as ComfyUI writes it (`embedding:word`), never part of a longer word.
        state.pattern = re.compile(r"(?<!\w)(?:embedding:)?(" + "|".join(re.escape(w) for w in words) + r")(?!\w)",
                                   re.IGNORECASE)
    return state


def load_into(pipeline: Any, catalog: Any, allow_pickle: bool, family: str | None, key: Hashable,
              enabled: bool = True) -> ModelEmbeddings:
    """The per-model state: the tokenizers and encoders put back as loaded from disk, then (when
    enabled) every embedding that fits loaded into them with diffusers' load_textual_inversion. A
    tokenizer that holds this key's state already keeps it (a pipeline built from the same components)."""
    found = encoders(pipeline)
    if found:
        current = getattr(found[0].tokenizer, STATE_ATTR, None)
        if current is not None and current.key == key:
            return current
    restore(found)
    if not enabled:
        return ModelEmbeddings(key)
    state = survey(catalog, allow_pickle, found, family, key, catalog.hashes)
    if not found:
        return state
    _assign_tokens(state, found)
    if state.loaded:
        try:
            _load(pipeline, state, found)
        except Exception as exc:  # noqa: BLE001 - the checkpoint goes on without them, each listed with the reason
            log.exception("loading textual inversion embeddings failed")
            restore(found)
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            for word, known in list(state.loaded.items()):
                known.reason = f"could not be loaded into this model: {reason}"
                state.skipped[word] = state.loaded.pop(word)
            state.tensors.clear()
    setattr(found[0].tokenizer, STATE_ATTR, state)
    return state


def _assign_tokens(state: ModelEmbeddings, found: list[Encoder]) -> None:
    """Each loaded embedding's tokens: `kiriti_<word in letters, digits and _>-`, made unique among them
    and the tokenizers' vocabularies."""
    taken: set[str] = set()
    vocabs = [e.tokenizer.get_vocab() for e in found]
    for known in state.loaded.values():
        slug = re.sub(r"[^a-z0-9]+", "_", known.name.lower()).strip("_") or "embedding"
        for n in range(1, 1000):
            known.token = TOKEN_PREFIX + slug + (f"x{n}" if n > 1 else "") + TOKEN_END
            tokens = known.tokens()
            if not any(t in taken or any(t in vocab for vocab in vocabs) for t in tokens):
                break
        taken.update(tokens)


def _load(pipeline: Any, state: ModelEmbeddings, found: list[Encoder]) -> None:
    from tokenizers import AddedToken

    for encoder in found:
        tokenizer, text_encoder = encoder.tokenizer, encoder.text_encoder
        if getattr(tokenizer, ORIGINAL_ATTR, None) is None:
            rows = int(text_encoder.get_input_embeddings().weight.shape[0])
            setattr(tokenizer, ORIGINAL_ATTR, (tokenizer._tokenizer.to_str(), rows))
        knowns = list(state.loaded.values())
        vectors = [k.file.vectors[encoder.slot] for k in knowns]
        added = sum(int(v.shape[0]) for v in vectors)
        # The rows diffusers' resize would fill with random draws from the vocabulary's statistics
        # (a covariance over every row, seconds on a real CLIP): made here without that; it overwrites them.
        text_encoder.resize_token_embeddings(len(tokenizer) + added, mean_resizing=False)
        pipeline.load_textual_inversion([{k.token: v} for k, v in zip(knowns, vectors)], token=[k.token for k in knowns],
                                        tokenizer=tokenizer, text_encoder=text_encoder)
        tokens = [t for k in knowns for t in k.tokens()]
        # Whole tokens only: `kiriti_x` inside `kiriti_x_1` (or a word the user wrote around it) is not `kiriti_x`.
        tokenizer._tokenizer.add_tokens([AddedToken(t, single_word=True, normalized=True) for t in tokens])
        state.tensors.extend(vectors)


def restore(found: list[Encoder]) -> None:
    """Each tokenizer and text encoder as loaded from disk (what Kiri added taken out)."""
    from tokenizers import Tokenizer

    for encoder in found:
        original = getattr(encoder.tokenizer, ORIGINAL_ATTR, None)
        if original is not None:
            text, rows = original
            encoder.tokenizer._tokenizer = Tokenizer.from_str(text)
            encoder.text_encoder.resize_token_embeddings(rows, mean_resizing=False)
            setattr(encoder.tokenizer, ORIGINAL_ATTR, None)
        setattr(encoder.tokenizer, STATE_ATTR, None)


def expand(text: str, state: ModelEmbeddings, used: dict[str, Known], skipped: dict[str, Known],
           first_only: bool = False) -> str:
    """`text` with each loaded embedding's word (any case, a whole word) written as its tokens (only
    the first with `first_only`: for a pipeline whose own encode_prompt expands it with diffusers'
    maybe_convert_prompt); the words seen go into `used` and `skipped` (by word in lower case)."""
    if not text or state.pattern is None:
        return text

    def replace(match: re.Match) -> str:
        word = match.group(1)
        known = state.loaded.get(word.lower())
        if known is None:
            found = state.skipped.get(word.lower())
            if found is not None:
                skipped[found.name.lower()] = found
            return match.group(0)
        used[known.name.lower()] = known
        return known.token if first_only else " ".join(known.tokens())

    return state.pattern.sub(replace, text)
