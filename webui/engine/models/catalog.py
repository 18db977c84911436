"""The model catalog: every model file on disk by kind (checkpoints, VAEs, LoRAs, embeddings,
upscalers, segmenters, motion modules, ControlNets), with family, size and short hash.

Each kind has its folders under models/ (AUTOMATIC1111's folder names are accepted too) and a
`describe` function that turns a path into an entry; a capability adds its kind with
`Catalog.add_kind`, so a new kind of model is one registration, not edits across the code.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from webui.engine.core.errors import NoModelAvailable
from webui.engine.models.families import (
    FAMILIES,
    NATIVE_SIZE,
    UnknownFamily,
    family_from_folder,
    family_from_keys,
    native_size,
    prediction_type,
    read_safetensors_header,
)
from webui.engine.models import fewstep, quant

# The embedded default model (models/checkpoints/kiri-shapes-ldm), chosen when nothing else is asked for.
DEFAULT_MODEL_NAME = "kiri-shapes-ldm"
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
# Files this small are hashed during the scan; larger ones in the background.
HASH_INLINE_BYTES = 256 * 1024 * 1024
# diffusers pipelines that make clips, not pictures: their folders in checkpoints/ are "video" models,
# listed by the Video tab and kept out of the image tabs' model picker.
VIDEO_PIPELINES = frozenset({
    "WanPipeline", "WanImageToVideoPipeline", "WanVideoToVideoPipeline", "LTXPipeline", "LTXImageToVideoPipeline",
    "LTXConditionPipeline", "CogVideoXPipeline", "CogVideoXImageToVideoPipeline", "CogVideoXVideoToVideoPipeline",
    "HunyuanVideoPipeline", "HunyuanVideoImageToVideoPipeline", "MochiPipeline", "LattePipeline", "AllegroPipeline",
    "SkyReelsV2Pipeline", "CosmosTextToWorldPipeline", "ConsisIDPipeline", "EasyAnimatePipeline",
})
_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # file or folder name without extension; what users and the API call it
    path: Path
    format: str  # "diffusers", "single_file", "pickle" (checkpoints); "folder" or "file" for other kinds
    family: str | None  # a key of FAMILIES, None when it could not be read
    size_bytes: int
    prediction: str = "epsilon"
    problem: str | None = None  # why this entry cannot be loaded, shown in the UI
    native_size: int = 512  # the image side the model was trained at
    kind: str = "checkpoint"  # a key of the catalog's kinds
    quantization: str | None = None  # how the weights are stored: "Q8_0", "Q4_K" (GGUF), "fp8"; None: as usual
    few_step: fewstep.FewStep | None = None  # a distilled few-step model (LCM, Turbo, ...) and its recipe

    @property
    def family_label(self) -> str:
        return FAMILIES.get(self.family or "", "unknown")

    @property
    def kind_label(self) -> str:
        """The family, its quantisation and few-step kind: "Flux · Q8_0", "SDXL · Lightning", "SD 1.x"."""
        parts = [self.family_label, self.quantization, self.few_step.label if self.few_step else None]
        return " · ".join(p for p in parts if p)

    @property
    def hash_source(self) -> Path:
        """The file whose sha256 is the model hash: the file itself, or a folder's denoiser."""
        if self.format != "diffusers":
            return self.path
        for sub in ("unet", "transformer"):
            for weights in sorted((self.path / sub).glob("*.safetensors")):
                return weights
        return self.path / "model_index.json"

    def example_prompts(self) -> list[str]:
        """Prompts the model is known to understand, from a kiri_examples.json beside its weights."""
        source = self.path / "kiri_examples.json" if self.path.is_dir() else self.path.with_suffix(".examples.json")
        try:
            prompts = json.loads(source.read_text())
        except (OSError, ValueError):
            return []
        return [p for p in prompts if isinstance(p, str)] if isinstance(prompts, list) else []

    def structure_guide(self) -> dict | None:
        """The ControlNet that keeps this model's shapes in place (video to video's "auto" structure):
        {"model", "module", "weight"} from a kiri_controlnet.json beside its weights, or None."""
        source = self.path / "kiri_controlnet.json" if self.path.is_dir() else self.path.with_suffix(".controlnet.json")
        try:
            guide = json.loads(source.read_text()).get("structure")
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(guide, dict) or not isinstance(guide.get("model"), str):
            return None
        weight = guide.get("weight", 1.0)
        return {"model": guide["model"], "module": str(guide.get("module", "canny")),
                "weight": float(weight) if isinstance(weight, (int, float)) and not isinstance(weight, bool) else 1.0}


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def describe(path: Path) -> CatalogEntry | None:
    """Build the entry for one path under models/checkpoints, or None if it is not a model."""
    if path.name.startswith("."):
        return None
    if path.is_dir():
        if not (path / "model_index.json").exists() or is_video_folder(path):
            return None
        try:
            family, problem = family_from_folder(path), None
        except (UnknownFamily, ValueError, OSError) as exc:
            family, problem = None, str(exc)
        return CatalogEntry(
            path.name, path, "diffusers", family, _folder_size(path), prediction_type(path), problem, native_size(path),
            quantization="fp8" if quant.fp8_of_folder(path) else None, few_step=fewstep.detect_folder(path),
        )
    suffix = path.suffix.lower()
    if path.stem.lower().endswith(".vae"):
        return None  # A1111's VAE beside its checkpoint (x.vae.safetensors): a VAE, never a checkpoint
    if suffix == ".safetensors":
        header: dict = {}
        try:
            header = read_safetensors_header(path)
            family, problem = family_from_keys([k for k in header if k != "__metadata__"]), quant.scaled_fp8_problem(header)
        except (UnknownFamily, ValueError, OSError) as exc:
            family, problem = None, str(exc)
        prediction = "flow" if family in {"sd3", "flux"} else "epsilon"
        size = NATIVE_SIZE.get(family or "", 512)
        return CatalogEntry(path.stem, path, "single_file", family, path.stat().st_size, prediction, problem, size,
                            quantization="fp8" if quant.single_file_fp8(header) else None,
                            few_step=fewstep.detect_file(path, header))
    if suffix == ".gguf":  # a quantised transformer alone (Forge's, ComfyUI-GGUF's): paired with a base when loaded
        info = quant.gguf_info(path)
        return CatalogEntry(path.stem, path, "gguf", info.family, path.stat().st_size, "flow", info.problem,
                            NATIVE_SIZE.get(info.family or "", 1024), quantization=info.quantization,
                            few_step=fewstep.detect_file(path))
    if suffix in PICKLE_SUFFIXES:
        return CatalogEntry(path.stem, path, "pickle", None, path.stat().st_size, few_step=fewstep.detect_file(path))
    return None


def is_video_folder(path: Path) -> bool:
    """A diffusers folder whose pipeline makes clips (model_index.json's _class_name)."""
    try:
        name = json.loads((path / "model_index.json").read_text()).get("_class_name", "")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(name, str) and (name in VIDEO_PIPELINES or name.endswith("VideoPipeline"))


def describe_video(path: Path, kind: str) -> CatalogEntry | None:
    """A video pipeline folder under checkpoints/: its own kind, so image tabs never see it."""
    if path.name.startswith(".") or not path.is_dir() or not (path / "model_index.json").exists():
        return None
    if not is_video_folder(path):
        return None
    return CatalogEntry(path.name, path, "diffusers", None, _folder_size(path), prediction_type(path), kind=kind)


def describe_file(path: Path, kind: str) -> CatalogEntry | None:
    """A model of a kind other than checkpoints: a weights file, or a folder with a config."""
    if path.name.startswith("."):
        return None
    if path.is_dir():
        if not any((path / name).exists() for name in ("config.json", "model_index.json")):
            return None
        return CatalogEntry(path.name, path, "folder", None, _folder_size(path), kind=kind)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return CatalogEntry(path.stem, path, "file", None, path.stat().st_size, kind=kind)
    if suffix in PICKLE_SUFFIXES:
        return CatalogEntry(path.stem, path, "pickle", None, path.stat().st_size, kind=kind)
    return None


SUBFOLDER_DEPTH = 3  # how deep the scan looks into a kind's folder (A1111 users sort LoRAs into subfolders)


def _described(directory: Path, kind: "ModelKind", depth: int = 0) -> Iterator[CatalogEntry]:
    """The entries of `directory`, by name; a subfolder that is no model itself is looked into, as
    AUTOMATIC1111 does (models/Lora/styles/x.safetensors), to SUBFOLDER_DEPTH; links to folders are not
    followed, nor a model folder of another kind (a diffusers checkpoint's vae/ is not a VAE of its own)."""
    later: list[Path] = []  # a folder's own models first: a namesake deeper down gets the longer name
    for path in sorted(directory.iterdir(), key=lambda p: p.name.lower()):
        entry = kind.describe(path, kind.name)
        if entry is not None:
            yield entry
        elif (depth < SUBFOLDER_DEPTH and path.is_dir() and not path.is_symlink() and not path.name.startswith(".")
              and not any((path / name).exists() for name in ("config.json", "model_index.json"))):  # not another kind's model
            later.append(path)
    for path in later:
        yield from _described(path, kind, depth + 1)


def _unique(entry: CatalogEntry, folder: str, taken: set[str], directory: Path | None = None) -> CatalogEntry | None:
    """The entry under a name no earlier one has: its own; else, beside a namesake (the folder
    kiri-shapes-ldm/ and the file kiri-shapes-ldm.safetensors), its file name, as A1111 titles it;
    else its path under models/. The first keeps the bare name, so finding it by that is unchanged
    (a folder sorts before its namesake files)."""
    try:
        inside = entry.path.relative_to(directory).as_posix() if directory is not None else entry.path.name
    except ValueError:
        inside = entry.path.name
    for name in (entry.name, entry.path.name, f"{folder}/{inside}"):
        if name not in taken:
            return entry if name == entry.name else replace(entry, name=name)
    return None


@dataclass(frozen=True)
class ModelKind:
    name: str
    folders: tuple[str, ...]  # under models/; the first is Kiri's own name, the rest AUTOMATIC1111's
    describe: Callable[[Path, str], CatalogEntry | None] = describe_file
    label: str = ""


def builtin_kinds() -> list[ModelKind]:
    return [
        ModelKind("checkpoint", ("checkpoints", "Stable-diffusion"), lambda path, kind: describe(path), "Checkpoint"),
        ModelKind("vae", ("vae", "VAE"), label="VAE"),
        ModelKind("lora", ("lora", "Lora", "LyCORIS"), label="LoRA"),
        ModelKind("embedding", ("embeddings",), label="Embedding"),
        ModelKind("upscaler", ("upscalers", "ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT"), label="Upscaler"),
        ModelKind("segmenter", ("segmentation",), label="Segmenter"),
        ModelKind("motion", ("motion",), label="Motion module"),
        ModelKind("video", ("checkpoints", "Stable-diffusion"), describe_video, "Video model"),
        ModelKind("controlnet", ("controlnet", "ControlNet"), label="ControlNet"),
    ]


class HashCache:
    """sha256 of model files, remembered by (path, size, mtime) in a JSON file between runs."""

    def __init__(self, cache_file: Path):
        self._file = cache_file
        self._lock = threading.Lock()
        try:
            self._data: dict[str, dict] = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            self._data = {}

    @staticmethod
    def _stamp(path: Path) -> dict:
        st = path.stat()
        return {"size": st.st_size, "mtime": st.st_mtime}

    def cached(self, path: Path) -> str | None:
        record = self._data.get(str(path))
        if record and path.exists() and {k: record.get(k) for k in ("size", "mtime")} == self._stamp(path):
            return record["sha256"]
        return None

    def sha256(self, path: Path) -> str:
        known = self.cached(path)
        if known:
            return known
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        with self._lock:
            self._data[str(path)] = {**self._stamp(path), "sha256": digest.hexdigest()}
            try:
                self._file.parent.mkdir(parents=True, exist_ok=True)
                tmp = self._file.with_suffix(".tmp")
                tmp.write_text(json.dumps(self._data, indent=1))
                tmp.replace(self._file)
            except OSError:
                pass  # a read-only models dir only costs re-hashing next time
        return digest.hexdigest()


class Catalog:
    """Scans the kinds' folders under `models_dir` and finds entries by name, title or hash."""

    def __init__(self, models_dir: Path, kinds: list[ModelKind] | None = None):
        self.models_dir = Path(models_dir)
        self.checkpoints_dir = self.models_dir / "checkpoints"
        self.hashes = HashCache(self.models_dir / ".kiri-hashes.json")
        self.kinds: dict[str, ModelKind] = {k.name: k for k in (kinds or builtin_kinds())}
        self._by_kind: dict[str, list[CatalogEntry]] = {}
        self._lock = threading.Lock()

    def add_kind(self, kind: ModelKind) -> None:
        self.kinds[kind.name] = kind

    def scan(self) -> list[CatalogEntry]:
        """Scan every kind's folders; returns the checkpoints (what most callers want)."""
        found: dict[str, list[CatalogEntry]] = {}
        for kind in self.kinds.values():
            entries: list[CatalogEntry] = []
            for folder in kind.folders:
                directory = self.models_dir / folder
                if not directory.is_dir():
                    continue
                for entry in _described(directory, kind):
                    entry = _unique(entry, folder, {e.name for e in entries}, directory)
                    if entry is not None:
                        entries.append(entry)
            found[kind.name] = entries
        with self._lock:
            self._by_kind = found
        for entry in found.get("checkpoint", []):
            source = entry.hash_source
            if source.exists() and source.stat().st_size <= HASH_INLINE_BYTES:
                self.hashes.sha256(source)
        return list(found.get("checkpoint", []))

    @property
    def entries(self) -> list[CatalogEntry]:
        """The checkpoints."""
        return self.of_kind("checkpoint")

    def of_kind(self, kind: str) -> list[CatalogEntry]:
        with self._lock:
            return list(self._by_kind.get(kind, []))

    def find_of_kind(self, kind: str, name: str) -> CatalogEntry | None:
        for entry in self.of_kind(kind):
            if name.strip() in (entry.name, entry.path.name):
                return entry
        return None

    def short_hash(self, entry: CatalogEntry) -> str | None:
        full = self.hashes.cached(entry.hash_source)
        return full[:10] if full else None

    def full_hash(self, entry: CatalogEntry) -> str:
        return self.hashes.sha256(entry.hash_source)

    def hash_all(self) -> None:
        """Hash what the scan left for later (big files); meant for a background thread."""
        for entry in self.entries:
            if entry.hash_source.exists():
                self.hashes.sha256(entry.hash_source)

    def title(self, entry: CatalogEntry) -> str:
        """AUTOMATIC1111-style title: `name [hash]`, plus the family, for the dropdown."""
        short = self.short_hash(entry)
        size = f"{entry.size_bytes / 1e9:.1f} GB" if entry.size_bytes >= 1e8 else f"{entry.size_bytes / 1e6:.1f} MB"
        label = f"{entry.name} [{short}]" if short else entry.name
        return f"{label} · {entry.kind_label} · {size}"

    def find(self, name: str) -> CatalogEntry | None:
        """Find by name, file name, dropdown title, `name [hash]` or hash prefix."""
        wanted = name.strip()
        for entry in self.entries:
            if wanted in (entry.name, entry.path.name, self.title(entry)):
                return entry
        base = wanted.split(" · ")[0].split(" [")[0]  # Kiri's dropdown title or A1111's `file name [hash]`
        for entry in self.entries:
            if base == entry.name:
                return entry
        for entry in self.entries:
            if base == entry.path.name:
                return entry
        if len(wanted) >= 8:
            for entry in self.entries:
                full = self.hashes.cached(entry.hash_source)
                if full and full.startswith(wanted.lower()):
                    return entry
        return None

    def default_entry(self, preferred: str | None = None) -> CatalogEntry:
        """The model to load when none is named: the preferred one, Kiri's own, else the first."""
        entries = self.entries or self.scan()
        if preferred:
            found = self.find(preferred)
            if found is not None:
                return found
        usable = [e for e in entries if e.problem is None and e.format != "pickle"]
        for entry in usable:
            if entry.name == DEFAULT_MODEL_NAME:
                return entry
        if usable:
            return usable[0]
        raise NoModelAvailable(
            f"no checkpoint found in {self.checkpoints_dir}: put a diffusers folder or a "
            ".safetensors file there (see models/README.md), then press the refresh button"
        )
