"""Few-step models: LCM, TCD, Turbo, Lightning and Hyper-SD checkpoints and LoRAs, and the sampler,
steps and CFG scale they are made for, read from what the files say about themselves.

A distilled model run with an ordinary model's defaults (DPM++ 2M, 20 steps, CFG 7) burns its
pictures; each kind has a recipe from its model card:

| kind | sampler | schedule | steps | CFG |
| --- | --- | --- | --- | --- |
| LCM (latent consistency) | LCM | the model's | 4 | 1.5 (the cards: 1 to 2) |
| TCD (trajectory consistency) | TCD | the model's | 4 | 1 (no guidance) |
| Turbo (SD-Turbo, SDXL-Turbo, merges) | Euler a | SGM Uniform (trailing) | 4 | 1 |
| Lightning (SDXL-Lightning) | Euler | SGM Uniform (trailing) | the file's N-step, else 4 | 1 |
| Hyper-SD | DDIM | SGM Uniform (trailing) | the file's N-steps, else 8 | 1; 5 for the "CFG" ones |
| FLUX.1-schnell (timestep-distilled) | Flow Euler | the model's | 4 | 1 |

On flow-matching models (SD3.5 Large Turbo, Flux) every kind runs Flow Euler at its steps and CFG.

CFG 1 turns classifier-free guidance off (the pipelines guide above 1), as the cards ask.

Where it is read, first found wins: a diffusers folder's scheduler config (LCMScheduler, TCDScheduler;
"timestep_spacing": "trailing" marks the adversarially distilled ones; a Flux transformer without the
guidance embedding is schnell), then the names: the file or
folder name, a safetensors header's `__metadata__` (`modelspec.title`, `ss_output_name`) and a folder's
`_name_or_path`. A LoRA named only "lightning" or "turbo" may be a style (a lightning bolt), so for
LoRAs those two count only beside a step count ("sdxl_lightning_4step_lora"). Reading is cheap:
configs and the safetensors header, never a tensor.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["FewStep", "RECIPES", "detect", "detect_folder", "detect_file", "from_texts"]


@dataclass(frozen=True)
class FewStep:
    kind: str  # "lcm", "tcd", "turbo", "lightning", "hyper", "schnell"
    sampler: str  # a sampler name of the registry
    scheduler: str | None  # a schedule type; None: the sampler's own (Automatic)
    steps: int
    cfg_scale: float
    source: str = ""  # what told: "scheduler config", "file name", "metadata"

    @property
    def label(self) -> str:
        return LABELS[self.kind]


LABELS = {"lcm": "LCM", "tcd": "TCD", "turbo": "Turbo", "lightning": "Lightning", "hyper": "Hyper-SD", "schnell": "schnell"}
RECIPES = {
    "lcm": FewStep("lcm", "LCM", None, 4, 1.5),
    "tcd": FewStep("tcd", "TCD", None, 4, 1.0),
    "turbo": FewStep("turbo", "Euler a", "SGM Uniform", 4, 1.0),
    "lightning": FewStep("lightning", "Euler", "SGM Uniform", 4, 1.0),
    "hyper": FewStep("hyper", "DDIM", "SGM Uniform", 8, 1.0),
    "schnell": FewStep("schnell", "Flow Euler", None, 4, 1.0),
}
HYPER_CFG = 5.0  # Hyper-SD's "CFG" LoRAs keep guidance (their card: 5 to 8)
MAX_NAMED_STEPS = 50

# Names as they are written: "Hyper-SDXL-8steps-lora", "sdxl_lightning_4step", "LCM_Dreamshaper_v7",
# "dreamshaper_8LCM", "sd_xl_turbo_1.0_fp16", "TCD-SDXL-LoRA". No letter right before the word, so
# "hyperrealism" or "xlcm" are not matches; "hyper" is Hyper-SD alone or followed by "-sd...".
_PATTERNS = (
    ("hyper", re.compile(r"(?<![a-z])hyper(?:[-_ ]?sd[a-z0-9]*)?(?![a-z])")),
    ("lightning", re.compile(r"(?<![a-z])lightning")),
    ("tcd", re.compile(r"(?<![a-z])tcd(?![a-z])")),
    ("lcm", re.compile(r"(?<![a-z])lcm(?![a-z])")),
    ("turbo", re.compile(r"(?<![a-z])turbo(?![a-z])")),
    ("schnell", re.compile(r"(?<![a-z])schnell(?![a-z])")),
)
_STEPS = re.compile(r"(?<![0-9])(\d{1,2})[-_ ]?steps?(?![a-z])")
_CFG = re.compile(r"(?<![a-z])cfg(?![a-z])")
_WEAK_FOR_LORAS = {"lightning", "turbo", "schnell"}  # words a style LoRA may be named after (or the model it is for)
METADATA_NAMES = ("modelspec.title", "ss_output_name")


def from_texts(texts: list[str], source: str, lora: bool = False) -> FewStep | None:
    """The recipe a name says, with its step count and CFG variant; None for an ordinary name."""
    for text in texts:
        low = text.lower()
        for kind, pattern in _PATTERNS:
            if not pattern.search(low):
                continue
            steps = _STEPS.search(low)
            if lora and kind in _WEAK_FOR_LORAS and steps is None:
                continue
            recipe = replace(RECIPES[kind], source=source)
            if steps is not None and kind in ("lightning", "hyper") and 1 <= int(steps.group(1)) <= MAX_NAMED_STEPS:
                recipe = replace(recipe, steps=int(steps.group(1)))
            if kind == "hyper" and _CFG.search(low):
                recipe = replace(recipe, cfg_scale=HYPER_CFG)
            return recipe
    return None


def detect_folder(folder: Path) -> FewStep | None:
    """A diffusers folder: its scheduler config first, then its name (and the name it was saved from)."""
    try:
        config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    config = config if isinstance(config, dict) else {}
    names = [folder.name]
    try:
        index = json.loads((folder / "model_index.json").read_text())
        if isinstance(index, dict) and isinstance(index.get("_name_or_path"), str):
            names.append(index["_name_or_path"])
    except (OSError, ValueError):
        pass
    cls = config.get("_class_name", "")
    if cls == "LCMScheduler":
        return replace(RECIPES["lcm"], source="scheduler config")
    if cls == "TCDScheduler":
        return replace(RECIPES["tcd"], source="scheduler config")
    named = from_texts(names, "name")
    if named is not None:
        return named
    try:
        transformer = json.loads((folder / "transformer" / "config.json").read_text())
    except (OSError, ValueError):
        transformer = {}
    if isinstance(transformer, dict) and transformer.get("_class_name") == "FluxTransformer2DModel" \
            and transformer.get("guidance_embeds") is False:
        return replace(RECIPES["schnell"], source="transformer config")  # dev has the guidance embedding
    if config.get("timestep_spacing") == "trailing" and "FlowMatch" not in cls:
        return replace(RECIPES["turbo"], source="scheduler config")  # trailing spacing: SD-Turbo's and SDXL-Turbo's
    return None


def detect_file(path: Path, header: dict | None = None, lora: bool = False) -> FewStep | None:
    """A single file: its header's metadata names first, then the file name."""
    metadata = (header or {}).get("__metadata__") if isinstance(header, dict) else None
    texts = [str(metadata[k]) for k in METADATA_NAMES if isinstance(metadata, dict) and metadata.get(k)]
    return from_texts(texts, "metadata", lora) or from_texts([path.stem], "file name", lora)


def detect(path: Path, lora: bool = False) -> FewStep | None:
    """A checkpoint or LoRA on disk: a diffusers folder, or a file (its safetensors header read)."""
    if path.is_dir():
        return detect_folder(path)
    header = None
    if path.suffix.lower() == ".safetensors":
        from webui.engine.models.families import read_safetensors_header

        try:
            header = read_safetensors_header(path)
        except (OSError, ValueError):
            header = None
    return detect_file(path, header, lora)
