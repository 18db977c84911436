"""Settings: what the user can change on the Settings tab and the flags launch.py reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

BUILTIN_EXTENSIONS = Path(__file__).resolve().parent.parent / "builtin_extensions"

# The numeric settings the Settings tab edits: (lowest, highest). The pixel budgets stop at the
# ceilings the engine enforces anyway (an upscaler's output is capped at 8192 x 8192).
RANGES = {
    "model_cache_size": (1, 32),
    "model_memory_budget_mb": (0, 1 << 20),
    "preview_every": (0, 1000),
    "batch_requests": (1, 16),
    "batch_wait_ms": (0, 1000),
    "control_net_unit_count": (1, 10),
    "ad_max_models": (1, 8),
    "max_pixels": (64 * 64, 8192 * 8192),
    "max_output_pixels": (64 * 64, 8192 * 8192),
    "max_video_pixels": (64 * 64, 1024 * 4096 * 4096),
}


@dataclass
class Settings:
    """What the user can change on the Settings tab; saved as JSON between runs."""

    models_dir: Path = Path("models")
    outputs_dir: Path = Path("outputs")
    styles_file: Path = Path("styles.csv")  # A1111's saved styles; styles*.csv beside it are read too (engine/styles/)
    library_dirs: list[Path] = field(default_factory=list)  # read-only folders the Library indexes (--library-dir)
    wildcards_dir: Path = Path("wildcards")  # __name__ wildcard files, one option a line (engine/wildcards/)
    device: str = "auto"
    allow_pickle: bool = False
    model_cache_size: int = 1  # loaded checkpoints kept in memory (LRU)
    model_memory_budget_mb: int = 0  # all loaded models together (checkpoints, upscalers, ...); 0: no limit
    # The memory planner (core/memory.py): "auto" picks a mode per job from its estimate; a mode's name
    # forces it (--memory-mode). memory_limit_mb caps what the planner counts as free on the device
    # (a GPU shared with other work; tests fake a small card with it); 0: what the device says.
    memory_mode: str = "auto"
    memory_limit_mb: int = 0
    # The GPU fast path (core/fastpath.py), decided per checkpoint when it loads: on by default where safe
    # (--no-fast-path turns it off); regional torch.compile (--compile) and fp8 weight storage (--fp8-weights)
    # are opt-in; attention_backend "auto" picks SDPA or the fastest installed exact backend (--attention).
    fast_path: bool = True
    compile_blocks: bool = False
    fp8_weights: bool = False
    attention_backend: str = "auto"
    default_model: str | None = None
    save_images: bool = True
    image_format: str = "png"
    preview_every: int = 5  # live preview every N steps; 0 turns previews off
    # Cross-request batching: up to this many waiting txt2img jobs of different users with the same model,
    # size, sampler, steps, prompts and add-ons run as one batch (generation/batching.py); 1: off. Off by
    # default: on CPU a batched call's pixels may differ from the same image made alone by 1/255.
    batch_requests: int = 1
    # With batching on: how long a job that would run alone waits for compatible requests on their way
    batch_wait_ms: int = 0
    extensions_dir: Path | None = None  # user extensions; None: only the built-in ones
    disabled_extensions: list[str] = field(default_factory=list)
    enabled_extensions: list[str] = field(default_factory=list)  # those off by default (the examples) turned on
    allow_extension_install: bool = False  # set by launch.py from --listen/--share and the insecure flag
    # The pixel budget (core/limits.py), checked on headers before any decoding and before a job is queued:
    max_pixels: int = 4096 * 4096  # a picture or a video frame taken in, by any route or tab
    max_output_pixels: int = 8192 * 8192  # a picture a job makes, or makes on the way (an upscaler model's output)
    max_video_pixels: int = 256 * 4096 * 4096  # frames x width x height of all the frames a video job decodes
    # The step cache a request that names none gets (the add-on's text, "taylorseer 5"); "": off
    step_cache: str = ""
    # The VAE a request that names none gets (A1111's sd_vae): "Automatic", "None" or a VAE's name
    sd_vae: str = "Automatic"
    # Textual inversion: an embedding's name in a prompt uses it, as in A1111 (off: read as plain words)
    use_embeddings: bool = True
    # The weight of a `<lora:name>` tag that gives none (A1111's extra_networks_default_multiplier)
    extra_networks_default_multiplier: float = 1.0
    # How many ControlNet units the generation tabs show (sd-webui-controlnet's control_net_unit_count)
    control_net_unit_count: int = 3
    # How many detailer units the generation tabs show (ADetailer's ad_max_models)
    ad_max_models: int = 2

    EDITABLE = ("model_cache_size", "default_model", "save_images", "image_format", "disabled_extensions", "enabled_extensions",
                "preview_every",
                "step_cache", "sd_vae", "use_embeddings", "extra_networks_default_multiplier", "control_net_unit_count", "ad_max_models",
                "model_memory_budget_mb", "max_pixels", "max_output_pixels", "max_video_pixels")

    def checked(self, name: str, value):
        """`value` for the numeric setting `name` as a whole number in its range, else a ValueError naming it."""
        low, high = RANGES[name]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be a whole number from {low:,} to {high:,} (got {value!r})")
        return value

    def extensions_dirs(self) -> list[tuple[Path, str]]:
        dirs = [(BUILTIN_EXTENSIONS, "built-in")]
        if self.extensions_dir is not None:
            dirs.append((Path(self.extensions_dir), "user"))
        return dirs

    def editable(self) -> dict:
        return {k: getattr(self, k) for k in self.EDITABLE}

    def save(self, path: Path) -> None:
        data = {k: v for k, v in asdict(self).items() if k in self.EDITABLE}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(path)

    def load_saved(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        names = {f.name for f in fields(self)}
        for key, value in data.items():
            if key in self.EDITABLE and key in names:
                if key in RANGES:
                    try:
                        value = self.checked(key, value)
                    except ValueError:
                        continue  # a hand-edited file with a bad number keeps the default
                setattr(self, key, value)
