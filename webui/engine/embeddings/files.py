"""Textual inversion files on disk: which paths are embeddings, how their vectors are read, and
which text encoders they fit.

    embeddings/              A1111's folder, at the project root (beside models/)
    models/embeddings/       Kiri's

    .safetensors             A1111's `emb_params` (vectors, width); SDXL's `clip_l` and `clip_g`;
                             diffusers' `{token: tensor}`
    .pt / .bin               A1111's `{"string_to_param": {"*": tensor}, "step", "sd_checkpoint", ...}`,
                             diffusers' learned_embeds.bin `{token: tensor}`: pickles, read only when the
                             user opts in (--allow-pickle), then with torch.load(weights_only=True)
    <folder>/learned_embeds.{safetensors,bin}   a diffusers concept folder

The word is the file's stem (the folder's name), as A1111 has it. The vectors are read on the CPU,
once per file version (path, size, mtime): files are a few kilobytes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.engine.models.catalog import CatalogEntry
from webui.engine.models.previews import preview_of as shared_preview_of

__all__ = ["EmbeddingFile", "EMBEDDING_SUFFIXES", "embedding_entries", "describe_embedding", "family_of",
           "load_file", "preview_of", "read_cached"]

KIND = "embedding"  # the catalog's model kind
TREE = "tree"  # the format of a catalog entry that is a folder of embeddings
MAX_DEPTH = 8  # subfolders read below one
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
PICKLES = (".pt", ".bin")
CONCEPT_FILES = ("learned_embeds.safetensors", "learned_embeds.bin")
SDXL_KEYS = ("clip_l", "clip_g")  # the two encoders' vectors, in the order of the pipeline's encoders
# Vector widths of the released text encoders, to name an embedding's family in a message.
FAMILY_OF_WIDTH = {768: "SD 1.x", 1024: "SD 2.x"}


class EmbeddingError(ValueError):
    """A file that is not an embedding Kiri reads (the reason is the message)."""


@dataclass
class EmbeddingFile:
    """One embedding's vectors by encoder ("" for a one-encoder embedding; "clip_l"/"clip_g" for
    SDXL), each (vectors, width) on the CPU, and what A1111's files say about their training."""

    vectors: dict[str, Any]
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """How many vectors (tokens) the word stands for."""
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def shape(self) -> int:
        """A1111's `shape`: the vector width, both encoders' together for SDXL (768 + 1280 = 2048)."""
        return sum(int(v.shape[-1]) for v in self.vectors.values())

    @property
    def family(self) -> str:
        return family_of(self.vectors, int(next(iter(self.vectors.values())).shape[-1]))


def family_of(slots: Any, width: int) -> str:
    """What vectors for these encoder slots, `width` wide (the first's), were made for, as a message names it."""
    if set(slots) == set(SDXL_KEYS):
        return "SDXL"
    return FAMILY_OF_WIDTH.get(width, f"a text encoder {width} wide")


def describe_embedding(path: Path, kind: str) -> CatalogEntry | None:
    """An embedding file, a diffusers concept folder, or a folder of them (format "tree": A1111 reads
    subfolders too; `embedding_entries` lists what is in it); preview pictures and other files are not."""
    if path.name.startswith("."):
        return None
    if ".." in path.parts:  # A1111's folder, found as models/../embeddings: its own path, as the OS reads it
        path = path.resolve()
    if path.is_dir():
        for name in CONCEPT_FILES:
            if (path / name).is_file():
                weights = path / name
                fmt = "pickle" if weights.suffix in PICKLES else "folder"
                return CatalogEntry(path.name, path, fmt, None, weights.stat().st_size, kind=kind)
        return CatalogEntry(path.name, path, TREE, None, 0, kind=kind)
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        return None
    return CatalogEntry(path.stem, path, "pickle" if suffix in PICKLES else "file", None, path.stat().st_size, kind=kind)


def embedding_entries(catalog: Any) -> list[CatalogEntry]:
    """Every embedding the catalog's last scan found, a subfolder's (any depth, in name order) where
    the folder was; the first of a name keeps it, a later namesake is told apart by its file name."""
    out: list[CatalogEntry] = []
    for entry in catalog.of_kind(KIND):
        out.extend(_walk(entry.path, entry.kind) if entry.format == TREE else [entry])
    return out


def _walk(folder: Path, kind: str, depth: int = 0) -> list[CatalogEntry]:
    found: list[CatalogEntry] = []
    try:
        children = sorted(folder.iterdir(), key=lambda p: p.name.lower())
    except OSError:
        return found
    for path in children:
        entry = describe_embedding(path, kind)
        if entry is None:
            continue
        if entry.format == TREE:
            if depth < MAX_DEPTH:
                found.extend(_walk(path, kind, depth + 1))
        else:
            found.append(entry)
    return found


def weights_path(entry: CatalogEntry) -> Path:
    """The file holding the vectors (a concept folder's learned_embeds file)."""
    if entry.path.is_dir():
        for name in CONCEPT_FILES:
            if (entry.path / name).is_file():
                return entry.path / name
    return entry.path


def preview_of(entry: CatalogEntry) -> Path | None:
    """A picture beside the embedding named like it (`<name>.preview.png`, `<name>.png`, ...), as A1111's cards use."""
    return shared_preview_of(entry.path)


def load_file(entry: CatalogEntry, allow_pickle: bool) -> EmbeddingFile:
    """The vectors of one embedding. A pickle without allow_pickle is PickleRefused (the model
    manager's policy and message); anything else unreadable is EmbeddingError."""
    from webui.engine.core.errors import PickleRefused

    if entry.format == TREE:
        raise EmbeddingError(f"{entry.path.name} is a folder of embeddings, not one")
    path = weights_path(entry)
    if path.suffix.lower() in PICKLES:
        if not allow_pickle:
            raise PickleRefused(f"{path.name} is a pickle file, which can run arbitrary code when loaded. "
                                "Use a .safetensors file, or start Kiri with --allow-pickle.")
        data = _load_pickle(path)
    else:
        from safetensors import SafetensorError
        from safetensors.torch import load_file as load_safetensors

        try:
            data = load_safetensors(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise EmbeddingError(f"{path.name} could not be read: {str(exc).splitlines()[0][:200]}") from exc
    return parse(data, path.name)


def _load_pickle(path: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise EmbeddingError(f"{path.name} could not be read safely: {str(exc).splitlines()[0][:200]}") from exc


def parse(data: Any, name: str) -> EmbeddingFile:
    """A loaded file's contents in any of the formats above -> EmbeddingFile."""
    import torch

    if isinstance(data, torch.Tensor):
        return EmbeddingFile({"": _matrix(data, name)})
    if not isinstance(data, dict):
        raise EmbeddingError(f"{name} holds no embedding (a {type(data).__name__})")
    info = {"step": _int(data.get("step")), "sd_checkpoint": _text(data.get("sd_checkpoint")),
            "sd_checkpoint_name": _text(data.get("sd_checkpoint_name"))}
    if isinstance(data.get("string_to_param"), dict):  # A1111 .pt
        params = data["string_to_param"]
        tensor = params.get("*", next(iter(params.values()), None))
        return EmbeddingFile({"": _matrix(tensor, name)}, **info)
    if all(isinstance(data.get(k), torch.Tensor) for k in SDXL_KEYS):  # SDXL: both encoders
        vectors = {k: _matrix(data[k], name) for k in SDXL_KEYS}
        if vectors["clip_l"].shape[0] != vectors["clip_g"].shape[0]:
            raise EmbeddingError(f"{name} has {vectors['clip_l'].shape[0]} clip_l vectors and "
                                 f"{vectors['clip_g'].shape[0]} clip_g vectors")
        return EmbeddingFile(vectors, **info)
    if isinstance(data.get("emb_params"), torch.Tensor):  # A1111 .safetensors
        return EmbeddingFile({"": _matrix(data["emb_params"], name)}, **info)
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:  # diffusers: {token: tensor}
        return EmbeddingFile({"": _matrix(tensors[0], name)}, **info)
    raise EmbeddingError(f"{name} is not an embedding of a known format (emb_params, string_to_param, "
                         f"clip_l + clip_g, or one token's tensor); it holds {', '.join(map(str, list(data)[:5]))}")


def _matrix(tensor: Any, name: str) -> Any:
    """(vectors, width) as float32 on the CPU."""
    import torch

    if not isinstance(tensor, torch.Tensor) or tensor.dim() not in (1, 2) or tensor.numel() == 0:
        raise EmbeddingError(f"{name} holds no vectors of a known shape")
    tensor = tensor.detach().to("cpu", torch.float32)
    return tensor.unsqueeze(0) if tensor.dim() == 1 else tensor.contiguous()


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# --- reads, once per file version -----------------------------------------------------------------

_cache: dict[tuple, EmbeddingFile | Exception] = {}
_cache_lock = threading.Lock()


def read_cached(entry: CatalogEntry, allow_pickle: bool) -> EmbeddingFile:
    """load_file, remembered by (path, size, mtime, allow_pickle); raises what load_file raised."""
    path = weights_path(entry)
    try:
        st = path.stat()
    except OSError as exc:
        raise EmbeddingError(f"{entry.path.name} is gone: {exc}") from exc
    key = (str(path), st.st_size, st.st_mtime_ns, allow_pickle and path.suffix.lower() in PICKLES)
    with _cache_lock:
        found = _cache.get(key)
    if found is None:
        try:
            found = load_file(entry, allow_pickle)
        except Exception as exc:  # noqa: BLE001 - remembered and raised to each reader
            found = exc
        with _cache_lock:
            stale = [k for k in _cache if k[0] == key[0] and k != key]
            for k in stale:
                del _cache[k]
            _cache[key] = found
    if isinstance(found, Exception):
        raise found
    return found
