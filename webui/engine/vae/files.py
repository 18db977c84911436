"""VAE files on disk: which paths are VAEs, how their weights are read, and how a model's own VAE
is rebuilt with them.

    models/VAE/ (or models/vae/)   A1111 single files (`*.safetensors`, `*.vae.safetensors`, pickles with
                                   --allow-pickle) in the original layout (encoder.down.0.block.0...) or
                                   diffusers' (encoder.down_blocks.0.resnets.0...), and diffusers
                                   AutoencoderKL folders (config.json + weights)
    models/checkpoints/            `<checkpoint>.vae.safetensors` beside a checkpoint, for "Automatic"

The weights are read once per file by the model manager (the "vae" loader: one cache and memory
budget with every other model), converted to diffusers' layout. A checkpoint then gets its own
AutoencoderKL built from them (`build_for`): a file has no config of its own, so the model's VAE
config gives the architecture; a folder's config does, and the checkpoint keeps its latent scale.
Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.engine.models.catalog import PICKLE_SUFFIXES, CatalogEntry, describe_file

__all__ = ["VAE_SUFFIXES", "VaeWeights", "build_for", "describe_vae", "load_weights", "stem_of"]

# A1111's names for a VAE beside its checkpoint; in models/VAE/ any weights file is a VAE.
VAE_SUFFIXES = (".vae.safetensors", ".vae.pt", ".vae.ckpt", ".vae.bin")
CHECKPOINT_FOLDERS = ("checkpoints", "Stable-diffusion")
# The parts of an autoencoder's state dict, in diffusers' layout.
_DIFFUSERS_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
# What stays the checkpoint's when a VAE is swapped in: the latent space the denoiser was trained on.
CHECKPOINT_KEYS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast")


def describe_vae(path: Path, kind: str) -> CatalogEntry | None:
    """A VAE in models/VAE/ (a weights file or an AutoencoderKL folder), or a `*.vae.*` file beside a checkpoint."""
    if path.parent.name in CHECKPOINT_FOLDERS:
        if path.is_dir() or not path.name.lower().endswith(VAE_SUFFIXES):
            return None
    return describe_file(path, kind)  # named as A1111's infotext names it: the file name without its extension


def stem_of(name: str) -> str:
    """A VAE's name without A1111's `.vae` marker: the checkpoint name it goes with."""
    return name[:-4] if name.lower().endswith(".vae") else name


@dataclass
class VaeWeights:
    """One VAE file's weights in diffusers' layout (CPU), and a folder's own config."""

    state: dict[str, Any]
    config: dict[str, Any] | None  # a folder's config.json; None for a single file

    @property
    def latent_channels(self) -> int:
        """What the decoder reads: the channels of decoder.conv_in's input."""
        return int(self.state["decoder.conv_in.weight"].shape[1])


def load_weights(entry: CatalogEntry, device: Any, allow_pickle: bool) -> VaeWeights:
    """The "vae" loader: (entry, device choice, allow_pickle) -> VaeWeights. The manager refuses
    pickles before this runs unless allow_pickle; they are read with weights_only=True."""
    from webui.engine.core.errors import ModelLoadError

    if entry.path.is_dir():
        return _load_folder(entry.path, allow_pickle)
    if entry.path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(entry.path))
    elif entry.path.suffix.lower() in PICKLE_SUFFIXES:
        state = _load_pickle(entry.path)
    else:
        raise ModelLoadError(f"{entry.path.name} is not a VAE file Kiri reads (.safetensors, or a pickle with --allow-pickle)")
    return VaeWeights(to_diffusers_layout(state, entry.path.name), None)


def _load_folder(folder: Path, allow_pickle: bool) -> VaeWeights:
    from diffusers import AutoencoderKL

    from webui.engine.core.errors import ModelLoadError, PickleRefused

    has_safetensors = any(folder.glob("*.safetensors"))
    if not has_safetensors and not allow_pickle:
        raise PickleRefused(f"the VAE folder {folder.name} holds only pickle weights, which can run arbitrary code "
                            "when loaded. Use .safetensors weights, or start Kiri with --allow-pickle.")
    try:
        vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True, use_safetensors=has_safetensors)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{folder.name} is not a diffusers AutoencoderKL folder: {str(exc).splitlines()[0][:200]}") from exc
    return VaeWeights(dict(vae.state_dict()), dict(vae.config))


def _load_pickle(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    from webui.engine.core.errors import ModelLoadError

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
        raise ModelLoadError(f"{path.name} could not be read safely: {str(exc).splitlines()[0][:200]}") from exc
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path.name} holds no state dict of weights")
    return state


def to_diffusers_layout(state: dict[str, Any], name: str) -> dict[str, Any]:
    """An original-layout VAE state dict (encoder.down.0.block.0..., maybe under first_stage_model.)
    converted with diffusers' own single-file code; a diffusers-layout one as it is."""
    import torch

    from webui.engine.core.errors import ModelLoadError

    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in state):
        if "decoder.conv_in.weight" not in state:
            raise ModelLoadError(f"{name} has no decoder weights (decoder.conv_in): it is not a whole VAE")
        # What an autoencoder has; training leftovers some files keep (loss.*, a discriminator) are left out.
        return {k: v for k, v in state.items() if k.startswith(_DIFFUSERS_PARTS)}
    # Levels of the encoder (encoder.down.<i>., maybe under first_stage_model.): the conversion's block counts.
    levels = {key[key.index("encoder.down."):].split(".")[2] for key in state if "encoder.down." in key}
    if not levels:
        raise ModelLoadError(f"{name} is not a VAE: no encoder/decoder weights of a known layout "
                             "(encoder.down.0.block.0... or encoder.down_blocks.0.resnets.0...)")
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    n = len(levels)
    converted = convert_ldm_vae_checkpoint(state, {"down_block_types": ["DownEncoderBlock2D"] * n,
                                                   "up_block_types": ["UpDecoderBlock2D"] * n})
    if "decoder.conv_in.weight" not in converted:
        raise ModelLoadError(f"{name} has no decoder weights (decoder.conv_in): it is not a whole VAE")
    return converted


def build_for(weights: VaeWeights, model_vae: Any, name: str) -> Any:
    """An AutoencoderKL with these weights for a model whose own VAE is `model_vae`: its config (the
    folder's own, else the model's), the model's latent scale, dtype and device."""
    from diffusers import AutoencoderKL

    from webui.engine.core.errors import InvalidRequest

    own = dict(model_vae.config)
    config = dict(weights.config) if weights.config is not None else dict(own)
    for key in CHECKPOINT_KEYS:
        if key in own:
            config[key] = own[key]
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    vae = AutoencoderKL.from_config(config)
    missing, unexpected = vae.load_state_dict(weights.state, strict=False)
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise InvalidRequest("sd_vae", f"the VAE {name!r} does not fit this model's VAE layout "
                                       f"({len(missing)} weights missing, {len(unexpected)} unexpected, e.g. {what})")
    param = next(model_vae.parameters())
    return vae.to(param.device, param.dtype).eval().requires_grad_(False)
