"""SD3-layout single files whose configuration has no T5 encoder, assembled component by component.

diffusers' `StableDiffusion3Pipeline.from_single_file` cannot read such a file when the two CLIP
encoders have the same width (it tells CLIP-L from CLIP-G by width, and gives CLIP-L an identity
projection), and it stops on a pipeline whose T5 slot is empty. The file's layout is SD3's own
(`model.diffusion_model.*`, `first_stage_model.*`, `text_encoders.clip_l|clip_g.transformer.*`), so
each part goes through diffusers' converter for that part and into a module built from the
family's configuration folder, every tensor accounted for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from webui.engine.core.errors import ModelLoadError

CLIP_PREFIXES = {"text_encoder": "text_encoders.clip_l.transformer.", "text_encoder_2": "text_encoders.clip_g.transformer."}


def applies(config_dir: Path) -> bool:
    """True when the SD3 configuration leaves T5 out (text_encoder_3 is null)."""
    index_file = config_dir / "model_index.json"
    if not index_file.is_file():
        return False
    index = json.loads(index_file.read_text())
    return index.get("text_encoder_3", [None, None])[0] is None


def load(path: Path, config_dir: Path, dtype: Any) -> Any:
    import diffusers
    import transformers
    from diffusers.loaders import single_file_utils as sfu
    from safetensors.torch import load_file

    single = load_file(str(path))
    index = json.loads((config_dir / "model_index.json").read_text())

    def config(name: str) -> dict:
        return json.loads((config_dir / name / "config.json").read_text())

    parts: dict[str, Any] = {}
    transformer = diffusers.SD3Transformer2DModel.from_config(config("transformer"))
    _load_all(transformer, sfu.convert_sd3_transformer_checkpoint_to_diffusers(dict(single)), path, "transformer")
    parts["transformer"] = transformer
    vae_config = config("vae")
    vae = diffusers.AutoencoderKL.from_config(vae_config)
    _load_all(vae, sfu.convert_ldm_vae_checkpoint(single, vae_config), path, "vae")
    parts["vae"] = vae
    for name, prefix in CLIP_PREFIXES.items():
        cls = getattr(transformers, index[name][1])
        encoder = cls(transformers.AutoConfig.from_pretrained(str(config_dir / name)))
        _load_all(encoder, sfu.convert_ldm_clip_checkpoint(single, prefix), path, name)
        parts[name] = encoder
    for name in ("tokenizer", "tokenizer_2"):
        parts[name] = getattr(transformers, index[name][1]).from_pretrained(str(config_dir / name))
    parts["scheduler"] = getattr(diffusers, index["scheduler"][1]).from_pretrained(str(config_dir / "scheduler"))
    pipeline = diffusers.StableDiffusion3Pipeline(**parts, text_encoder_3=None, tokenizer_3=None)
    return pipeline.to(dtype=dtype) if dtype is not None else pipeline


def _load_all(module: Any, state: dict[str, Any], path: Path, name: str) -> None:
    own = module.state_dict()
    if not any(k.startswith("text_model.") for k in own):  # transformers >= 5.6 names
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    if missing:
        raise ModelLoadError(f"{path.name} does not match the configuration: {len(missing)} weights of its {name} are "
                             f"missing from the file (e.g. {missing[0]})")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
