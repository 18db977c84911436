"""The pipelines that make clips: AnimateDiff on a loaded image checkpoint (a motion module from
models/motion/), and native video pipelines (Wan, LTX-Video, CogVideoX, ...) from diffusers folders
in models/checkpoints/. Also the loaders of those two kinds, and prompt travel.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from webui.engine.core.errors import InvalidRequest, ModelLoadError

if TYPE_CHECKING:
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.models.catalog import CatalogEntry
    from webui.engine.models.manager import LoadedModel

_KEYFRAME = re.compile(r"^\s*(\d+)\s*:\s*(.*\S)\s*$")
UNET_FAMILIES = {"sd1": "AnimateDiffPipeline", "sd2": "AnimateDiffPipeline", "sdxl": "AnimateDiffSDXLPipeline"}


# --- loaders -------------------------------------------------------------------------------------

def load_motion_module(entry: "CatalogEntry", device: "DeviceChoice", allow_pickle: bool) -> Any:
    """A MotionAdapter: a diffusers folder, or an original AnimateDiff single file (mm_sd_v15_v2.safetensors,
    .ckpt when pickles are allowed), its layout read from the weights (no hub config needed)."""
    from diffusers import MotionAdapter

    if entry.format == "folder":
        return MotionAdapter.from_pretrained(str(entry.path), local_files_only=True)
    if entry.format == "pickle":
        import torch

        state = torch.load(entry.path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    else:
        from safetensors.torch import load_file

        state = load_file(str(entry.path))
    return adapter_from_original(state, entry.name)


def adapter_from_original(state: dict, name: str = "motion module") -> Any:
    """A MotionAdapter from an original AnimateDiff state dict: block channels from each block's
    proj_in, layers from the module indices, context from the positional encoding's length."""
    from diffusers import MotionAdapter
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    converted = convert_animatediff_checkpoint_to_diffusers(state)

    def indices(prefix: str, at: int) -> list[int]:
        return sorted({int(k.split(".")[at]) for k in converted if k.startswith(prefix) and k.split(".")[at].isdigit()})

    blocks = indices("down_blocks.", 1)
    if not blocks:
        raise ModelLoadError(f"{name} is not an AnimateDiff motion module (no down_blocks.*.motion_modules weights)")
    channels = [int(converted[f"down_blocks.{i}.motion_modules.0.proj_in.weight"].shape[0]) for i in blocks]
    encodings = [v for k, v in state.items() if k.endswith("pos_encoder.pe")]
    adapter = MotionAdapter(
        block_out_channels=tuple(channels),
        motion_layers_per_block=len(indices("down_blocks.0.motion_modules.", 3)),
        motion_transformer_layers_per_block=len(indices("down_blocks.0.motion_modules.0.transformer_blocks.", 5)),
        motion_max_seq_length=int(encodings[0].shape[1]) if encodings else 32,
        use_motion_mid_block=any(k.startswith("mid_block.") for k in converted),
        motion_mid_block_layers_per_block=max(1, len(indices("mid_block.motion_modules.", 2))),
    )
    missing, unexpected = adapter.load_state_dict(converted, strict=False)
    # The positional encodings are sinusoids the adapter computes itself; anything else missing is a mismatch.
    missing = [k for k in missing if not k.endswith("pos_embed.pe")]
    if missing or unexpected:
        raise ModelLoadError(f"{name} does not match the AnimateDiff layout: "
                             f"{len(missing)} missing and {len(unexpected)} unexpected weights, e.g. {(missing + unexpected)[0]}")
    return adapter


def load_video_pipeline(entry: "CatalogEntry", device: "DeviceChoice", allow_pickle: bool) -> Any:
    import diffusers
    import torch

    class_name = json.loads((entry.path / "model_index.json").read_text()).get("_class_name", "")
    pipeline_class = getattr(diffusers, class_name, None)
    if pipeline_class is None:
        raise ModelLoadError(f"{entry.name} needs diffusers' {class_name}, which this diffusers version lacks")
    dtype = torch.bfloat16 if device.bf16_supported() else torch.float32
    pipeline = pipeline_class.from_pretrained(str(entry.path), torch_dtype=dtype, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device.device)


# --- AnimateDiff ---------------------------------------------------------------------------------

def animatediff_pipeline(model: "LoadedModel", adapter_name: str, adapter: Any) -> Any:
    """The AnimateDiff pipeline over the loaded checkpoint's components, built once per (model, module)
    and kept with the model (dropped with it). A module made for another UNet is refused."""
    key = f"animatediff:{adapter_name}"
    if key in model.derived:
        return model.derived[key]
    pipeline_name = UNET_FAMILIES.get(model.family)
    unet = getattr(model.pipeline, "unet", None)
    if pipeline_name is None or unet is None:
        raise InvalidRequest("motion_module", f"motion modules animate UNet checkpoints (SD 1.x, SD 2.x, SDXL); "
                                              f"{model.name} is a {model.family} model: choose another model or a "
                                              "native video model")
    wanted = tuple(unet.config.block_out_channels)
    have = tuple(adapter.config.block_out_channels)
    if have != wanted:
        raise InvalidRequest("motion_module", f"motion module {adapter_name!r} is made for a UNet with block channels "
                                              f"{list(have)}; {model.name} ({model.family}) has {list(wanted)}: "
                                              "use a motion module of its family")
    import diffusers

    try:
        pipeline = motion_pipeline(getattr(diffusers, pipeline_name), model.pipeline, adapter)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InvalidRequest("motion_module", f"motion module {adapter_name!r} does not fit {model.name}: "
                                              f"{str(exc).splitlines()[0][:200]}") from exc
    pipeline.set_progress_bar_config(disable=True)
    model.derived[key] = pipeline
    return pipeline


class AdapterSettings:
    """What an AnimateDiff pipeline reads of its motion adapter once the motion UNet is made: the
    config (FreeNoise's context length). Not a torch module, so diffusers reads the pipeline's device
    and dtype from the modules that run, not from the catalog's adapter (on the CPU, in fp32)."""

    def __init__(self, config: Any):
        self.config = config


def motion_pipeline(pipeline_class: Any, base: Any, adapter: Any, unet: Any = None) -> Any:
    """``pipeline_class`` (an AnimateDiff pipeline) over ``base``'s components, with a motion UNet made
    from the base UNet and ``adapter`` (or ``unet``, a motion UNet already made) on the base UNet's
    device and in its dtype. Not ``from_pipe``: that casts every component, the shared ones in place,
    to one dtype (fp32 unless told), which left the checkpoint's fp16 text encoder and VAE in fp32
    (its next txt2img failed on mixed dtypes) and the motion UNet on the CPU."""
    from diffusers import UNetMotionModel

    if unet is None:
        unet = UNetMotionModel.from_unet2d(plain_unet(base.unet), adapter)
    unet.to(device=base.unet.device, dtype=base.unet.dtype)
    expected, optional = pipeline_class._get_signature_keys(pipeline_class)
    parts = {name: component for name, component in base.components.items() if name in expected}
    parts.update(motion_adapter=AdapterSettings(adapter.config), unet=unet)
    parts.update({name: base.config[name] for name in optional if name in base.config})
    return pipeline_class(**parts)


def plain_unet(unet: Any) -> Any:
    """`unet` without the LoRA adapters PEFT added to its layers (engine/lora/): a UNet of the same config
    sharing its own weight tensors (nothing copied), for from_unet2d, which copies blocks by their
    state-dict names (PEFT's `base_layer.` and `lora_A.<name>.` would not fit)."""
    if not getattr(unet, "peft_config", None):
        return unet
    from accelerate import init_empty_weights

    state = {k.replace(".base_layer.", "."): v for k, v in unet.state_dict().items() if ".lora_" not in k}
    with init_empty_weights():
        plain = type(unet).from_config(unet.config)
    plain.load_state_dict(state, assign=True)
    return plain.to(dtype=unet.dtype) if any(p.dtype != unet.dtype for p in plain.parameters()) else plain


def context_length(adapter: Any) -> int:
    """How many frames the motion module sees at once (what it was trained on)."""
    return int(getattr(adapter.config, "motion_max_seq_length", 32) or 32)


def set_context(pipeline: Any, frames: int, window: int, travel: bool) -> bool:
    """FreeNoise sliding windows for clips longer than the module's context, and for prompt travel
    (diffusers interpolates the keyframes' embeddings only on that path); off otherwise."""
    if frames > window or travel:
        length = min(window, frames)
        pipeline.enable_free_noise(context_length=length, context_stride=max(1, length // 4))
        return True
    if getattr(pipeline, "free_noise_enabled", False):
        pipeline.disable_free_noise()
    return False


def has_free_init(pipeline: Any) -> bool:
    """AnimateDiff's pipelines carry diffusers' FreeInit frequency filter (FreeInitMixin)."""
    return hasattr(pipeline, "_get_free_init_freq_filter") and hasattr(pipeline, "_apply_freq_filter")


def call_with_free_init(pipeline: Any, kwargs: dict[str, Any], rounds: int, stopped: list[int], denoise: Any) -> list[Any]:
    """FreeInit (Wu et al. 2023): make the clip `rounds` times; each time after the first starts from
    the last clip's latents noised back to the schedule's first step, keeping their low frequencies
    (in space and time: the layout and what each object is) and taking fresh noise for the high
    ones, which steadies what objects look like from frame to frame.

    `denoise(latents, on_step)` makes one round's pipeline call (through the add-on seam, so every
    round is a call the add-ons apply to) from those latents, `on_step` after the caller's own step
    callback; it returns the round's frames.

    diffusers' `enable_free_init` noises to timestep 999 through the sampler's `add_noise`, which a
    sigma sampler on a "leading" schedule (Euler at few steps: 501, 1) cannot look up, and scales the
    noise for DDIM-like samplers only; here the noise goes to the first step the sampler will take,
    in its own parametrisation, and the frequency filter is diffusers'. Every round decodes its frames
    (the last step's latents are taken by the step callback), so an interrupt in any round ends with
    the frames of that step, as without FreeInit."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    final: dict[str, Any] = {}

    def keep_latents(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        final["latents"] = tensors.get("latents")
        return tensors

    generator, steps = kwargs["generator"], kwargs["num_inference_steps"]
    unet, device = pipeline.unet, pipeline._execution_device
    channels, scale = unet.config.in_channels, pipeline.vae_scale_factor
    shape = (1, channels, kwargs["num_frames"], kwargs["height"] // scale, kwargs["width"] // scale)
    pipeline.scheduler.set_timesteps(steps, device=device)
    # The pipeline's own first noise (FreeNoise's shuffled windows included), at unit scale: it scales what it is given.
    noise = pipeline.prepare_latents(1, channels, shape[2], kwargs["height"], kwargs["width"], torch.float32, device,
                                     generator) / pipeline.scheduler.init_noise_sigma
    low_pass = pipeline._get_free_init_freq_filter(shape=(1, *shape[1:]), device=device, filter_type="butterworth",
                                                    order=4, spatial_stop_frequency=0.25, temporal_stop_frequency=0.25)
    latents = noise
    for round_no in range(rounds):
        frames = denoise(latents.to(unet.dtype), keep_latents)
        if stopped or round_no == rounds - 1:
            return frames
        scheduler = pipeline.scheduler
        scheduler.set_timesteps(steps, device=device)
        noised = scheduler.add_noise(final["latents"].float(), noise, scheduler.timesteps[:1]) / scheduler.init_noise_sigma
        fresh = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        latents = pipeline._apply_freq_filter(noised, fresh, low_pass)
    return frames


# --- prompt travel -------------------------------------------------------------------------------

def keyframes(prompt: str, frames: int, field: str = "prompt") -> dict[int, str]:
    """`0: a red circle` / `8: a blue circle` lines -> {0: ..., 8: ...}; any other text is one prompt
    for every frame ({0: text}). Frames between keyframes get interpolated embeddings."""
    lines = [line for line in prompt.splitlines() if line.strip()]
    matches = [_KEYFRAME.match(line) for line in lines]
    if not lines or not all(matches):
        return {0: prompt.strip()}
    keys: dict[int, str] = {}
    for match in matches:
        frame, text = int(match.group(1)), match.group(2)  # type: ignore[union-attr]
        if frame >= frames:
            raise InvalidRequest(field, f"keyframe {frame} is past the clip's last frame ({frames - 1})")
        if frame in keys:
            raise InvalidRequest(field, f"keyframe {frame} is given twice")
        keys[frame] = text
    keys = dict(sorted(keys.items()))
    if 0 not in keys:
        keys = {0: next(iter(keys.values())), **keys}
    return keys


def call_kwargs(pipeline: Any, **wanted: Any) -> dict[str, Any]:
    """The arguments this pipeline's __call__ takes (video pipelines differ), None left out."""
    import inspect

    accepted = inspect.signature(pipeline.__call__).parameters
    return {k: v for k, v in wanted.items() if k in accepted and v is not None}
