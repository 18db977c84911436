"""The step cache methods Kiri offers, each one of diffusers' cache hooks (diffusers/hooks/), and how
each is put on a denoiser for one call and taken off after.

    first_block_cache            runs the first transformer block every step and, while its output
                                 changes less than `threshold` (relative), reuses the other blocks'
                                 residual from the last full step. Transformers only (SD3, PixArt, Flux).
    taylorseer                   computes the attention layers fully every `interval` steps (after
                                 `warmup` full steps) and predicts them in between from a Taylor series
                                 of their past outputs. Transformers and UNets (their attention layers).
    pyramid_attention_broadcast  reuses each attention layer's output for `skip` steps while the
                                 timestep lies in `timesteps`. Transformers and UNets.

Not offered: MagCache needs magnitude ratios calibrated per model; SeaCache needs a denoising loop that
tells it the step and sigma (diffusers' cache_context, which only some pipelines set); FasterCache is
made for video transformers that run the conditional and unconditional batches apart; the text KV
cache hooks only the models that project their text tokens once.

Only public diffusers hooks are used. The one thing Kiri supplies is what those pipelines leave out:
a cache context (diffusers' `cache_context`, which SD 1.x/SD3/PixArt pipelines never enter) for the
whole call, and the timestep (read from the denoiser's own input by a forward pre-hook) for the
methods that need one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from webui.engine.core.errors import InvalidRequest

__all__ = ["METHODS", "Hooked", "Method", "Param", "denoiser_of", "install", "kind_of"]

# Attention layers inside transformer blocks, of a DiT (transformer_blocks.3.attn) or of a UNet's
# spatial transformers (down_blocks.1.attentions.0.transformer_blocks.0.attn2).
_ATTENTION = r"(.*\.)?(transformer_blocks|single_transformer_blocks)\.\d+\.attn\d?"
_BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "blocks", "layers")


@dataclass(frozen=True)
class Param:
    default: Any
    low: float | None = None
    high: float | None = None
    kind: type = float  # float, int, or tuple (a low-high pair of timesteps)
    doc: str = ""

    def check(self, field_name: str, value: Any) -> Any:
        if self.kind is tuple:
            if isinstance(value, str):
                value = [_to_number(v) for v in value.replace("-", " ").split()]
            ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value)
            if not ok or not (self.low <= float(value[0]) < float(value[1]) <= self.high):
                raise InvalidRequest(field_name, f"{field_name} must be two timesteps [low, high] with "
                                                 f"{self.low:g} <= low < high <= {self.high:g} (got {value!r})")
            return (int(float(value[0])), int(float(value[1])))
        if not _is_number(value) or (self.kind is int and float(value) != int(value)):
            raise InvalidRequest(field_name, f"{field_name} must be a {'whole ' if self.kind is int else ''}number "
                                             f"from {self.low:g} to {self.high:g} (got {value!r})")
        value = self.kind(value)
        if not self.low <= value <= self.high:
            raise InvalidRequest(field_name, f"{field_name} must be from {self.low:g} to {self.high:g} (got {value!r})")
        return value


def _to_number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    main: str  # the parameter the text form gives bare ("first_block_cache 0.05")
    params: dict[str, Param]
    unet: bool  # whether a UNet denoiser can take it
    hook_names: tuple[str, ...]
    config: Callable[[dict, Any, Callable[[], Any]], Any] = field(repr=False)  # (settings, denoiser, timestep) -> config
    apply: Callable[[Any, Any], None] = field(repr=False)  # (denoiser, config)
    needs_timestep: bool = False

    def check_together(self, settings: dict, field_name: str) -> None:
        if self.name == "taylorseer" and settings["warmup"] < 1:
            raise InvalidRequest(f"{field_name}.warmup", "taylorseer needs at least one full step before it predicts")

    def check_denoiser(self, denoiser: Any, model_name: str, field_name: str) -> None:
        if denoiser is None:
            raise InvalidRequest(field_name, f"{model_name}'s pipeline has no denoiser a step cache can hook")
        kind = kind_of(denoiser)
        others = [m.name for m in METHODS.values() if m is not self and (m.unet or kind != "unet")]
        if kind == "unet" and not self.unet:
            raise InvalidRequest(field_name, f"{self.name} is not available for UNet models ({model_name}): it skips "
                                             f"a transformer's blocks, which a UNet does not have; use {' or '.join(others)}")
        if self.name == "first_block_cache" and len(_cacheable_blocks(denoiser)) < 2:
            raise InvalidRequest(field_name, f"first_block_cache needs a transformer with at least two blocks it can skip, "
                                             f"and {model_name} has fewer; use {' or '.join(others)}")
        if self.name != "first_block_cache" and not _attention_layers(denoiser):
            raise InvalidRequest(field_name, f"{self.name} found no attention layers to cache in {model_name}'s denoiser")


def denoiser_of(pipeline: Any) -> Any:
    return getattr(pipeline, "transformer", None) or getattr(pipeline, "unet", None)


def kind_of(denoiser: Any) -> str:
    return "unet" if hasattr(denoiser, "down_blocks") else "transformer"


def _cacheable_blocks(denoiser: Any) -> list[Any]:
    """The transformer's blocks in order; a last block that computes only the image stream (SD3's
    context_pre_only) is left out, so First Block Cache never has to add a text residual it lacks."""
    import torch

    blocks = [b for name, child in denoiser.named_children()
              if name in _BLOCK_LISTS and isinstance(child, torch.nn.ModuleList) for b in child]
    if blocks and getattr(blocks[-1], "context_pre_only", False):
        blocks = blocks[:-1]
    return blocks


def _attention_layers(denoiser: Any) -> list[str]:
    return [name for name, _ in denoiser.named_modules() if re.fullmatch(_ATTENTION, name)]


# --- first block cache -----------------------------------------------------------------------
def _fbc_config(settings: dict, denoiser: Any, timestep: Callable[[], Any]) -> Any:
    from diffusers.hooks import FirstBlockCacheConfig

    return FirstBlockCacheConfig(threshold=settings["threshold"])


def _fbc_apply(denoiser: Any, config: Any) -> None:
    """diffusers' apply_first_block_cache on a holder of the denoiser's own blocks (not copies): the
    same hooks on the same modules, with SD3's text-less last block left to run every step."""
    import torch
    from diffusers.hooks import apply_first_block_cache

    holder = torch.nn.Module()
    holder.transformer_blocks = torch.nn.ModuleList(_cacheable_blocks(denoiser))
    apply_first_block_cache(holder, config)


# --- taylorseer --------------------------------------------------------------------------------
def _taylorseer_config(settings: dict, denoiser: Any, timestep: Callable[[], Any]) -> Any:
    from diffusers.hooks import TaylorSeerCacheConfig

    return TaylorSeerCacheConfig(cache_interval=settings["interval"], disable_cache_before_step=settings["warmup"],
                                 max_order=settings["order"], taylor_factors_dtype=denoiser.dtype,
                                 cache_identifiers=[_ATTENTION])


def _taylorseer_apply(denoiser: Any, config: Any) -> None:
    from diffusers.hooks import apply_taylorseer_cache

    apply_taylorseer_cache(denoiser, config)


# --- pyramid attention broadcast ---------------------------------------------------------------
def _pab_config(settings: dict, denoiser: Any, timestep: Callable[[], Any]) -> Any:
    from diffusers.hooks import PyramidAttentionBroadcastConfig

    span = settings["timesteps"]
    return PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=settings["skip"], cross_attention_block_skip_range=settings["skip"],
        spatial_attention_timestep_skip_range=span, cross_attention_timestep_skip_range=span,
        current_timestep_callback=timestep)


def _pab_apply(denoiser: Any, config: Any) -> None:
    from diffusers.hooks import apply_pyramid_attention_broadcast

    apply_pyramid_attention_broadcast(denoiser, config)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("first_block_cache", "First Block Cache", "threshold",
           {"threshold": Param(0.05, 0.0, 1.0, float, "relative change of the first block's output below which the rest is reused")},
           unet=False, hook_names=("fbc_leader_block_hook", "fbc_block_hook"), config=_fbc_config, apply=_fbc_apply),
    Method("taylorseer", "TaylorSeer", "interval",
           {"interval": Param(5, 1, 100, int, "full computations every this many steps"),
            "warmup": Param(3, 0, 1000, int, "full steps before the first prediction"),
            "order": Param(1, 0, 4, int, "order of the Taylor series")},
           unet=True, hook_names=("taylorseer_cache",), config=_taylorseer_config, apply=_taylorseer_apply),
    Method("pyramid_attention_broadcast", "Pyramid Attention Broadcast", "skip",
           {"skip": Param(2, 2, 100, int, "reuse each attention output for this many steps"),
            "timesteps": Param((100, 800), 0, 1000, tuple, "the timesteps (0-1000) where outputs are reused")},
           unet=True, hook_names=("pyramid_attention_broadcast",), config=_pab_config, apply=_pab_apply,
           needs_timestep=True),
)}


class Hooked:
    """The hooks one call put on a denoiser; remove() leaves it as it was (no hook, no state, no context)."""

    def __init__(self, method: Method, denoiser: Any):
        self.method, self.denoiser = method, denoiser
        self.timestep: Any = None
        self._handle: Any = None

    def current_timestep(self) -> Any:
        t = self.timestep
        return 1000 if t is None else float(t.flatten()[0]) if hasattr(t, "flatten") else float(t)

    def _record_timestep(self, module: Any, args: tuple, kwargs: dict) -> None:
        self.timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)

    def remove(self) -> None:
        from diffusers.hooks import HookRegistry
        from diffusers.hooks.hooks import _set_cache_context

        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        registry = HookRegistry.check_if_exists_or_initialize(self.denoiser)
        registry.invalidate_child_registries_cache()
        _set_cache_context(self.denoiser, None)
        for name in self.method.hook_names:
            registry.remove_hook(name, recurse=True)
        registry.invalidate_child_registries_cache()


def install(method: Method, denoiser: Any, settings: dict) -> Hooked:
    """Put `method`'s hooks on `denoiser` for one call, with fresh state; remove() takes them off."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    hooked = Hooked(method, denoiser)
    try:
        if method.needs_timestep:
            hooked._handle = denoiser.register_forward_pre_hook(hooked._record_timestep, with_kwargs=True)
        method.apply(denoiser, method.config(settings, denoiser, hooked.current_timestep))
        registry = HookRegistry.check_if_exists_or_initialize(denoiser)
        registry.invalidate_child_registries_cache()  # the blocks' new hooks, as CacheMixin.enable_cache does
        # One context for the whole call (the batch holds the conditional and unconditional halves together);
        # a pipeline that enters cache_context itself (Flux) sets its own per step.
        _set_cache_context(denoiser, CacheContext("cond"))
    except BaseException:
        hooked.remove()
        raise
    return hooked
