"""The memory planner: before a job, how much memory its calls will need in each memory mode, and the
mode to run it in, so nobody tunes --medvram/--lowvram by hand.

The estimate is a function of plain numbers (the pipeline's components' parameter bytes, the latent
and pixel sizes, the batch); `plan()` compares it with what the device has free and picks the first
mode of the ladder that fits. The plan is plain data; the runner writes it to the log and the job's
status line, never to the infotext (every mode makes the same pixels). `apply()` puts a pipeline in
a mode with diffusers' own switches (model / sequential CPU offload, VAE tiling and slicing) and
undoes the previous mode's first. A call that still runs out of memory is retried once in the next
mode (the runner); `OutOfMemory` is the user's error when that fails too.

Imports no capability: the generation runner calls it, the model manager undoes a mode before it
moves a pipeline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from webui.engine.core.errors import KiriError

log = logging.getLogger(__name__)

# The ladder, least to most memory saved (and slowest last). batch-split is sequential offload with
# each image of a batch in a call of its own.
MODES = ("none", "vae-tiling", "model-offload", "sequential-offload", "batch-split")
MEMORY_MODE_CHOICES = ("auto",) + MODES
HEADROOM = 0.9  # plan to use at most this share of what is free (fragmentation, cuDNN workspaces)
# Bytes of activations per latent position and denoiser base channel (both guidance branches counted
# apart); measured roughly on SD 1.5 at 512 x 512 with SDPA (about 0.6 GB in fp16).
DENOISER_ACTIVATIONS = 64
VAE_ACTIVATIONS = 12  # feature maps of the VAE decoder alive at once at full resolution
_OFFLOAD = {"model-offload": "model", "sequential-offload": "sequential", "batch-split": "sequential"}
GB = 1 << 30


class OutOfMemory(KiriError):
    """A call ran out of memory in its mode and in the next one: the message names a mode that would fit."""


@dataclass(frozen=True)
class MemoryPlan:
    """What the planner chose for a job, as plain data."""

    mode: str
    reason: str
    peak_bytes: int  # estimated peak on the device in `mode`
    available_bytes: int  # what the device had free for the job (the pipeline's own weights counted in)
    device: str = "cpu"
    ram_bytes: int = 0  # estimated peak host RAM in `mode` (offloaded weights live there)
    estimates: dict[str, int] = field(default_factory=dict)  # every mode's estimated peak on the device
    split: bool = False  # each image of a batch in a call of its own
    ladder: tuple[str, ...] = MODES  # the modes this job may use, in order (the retry's next one)

    def text(self) -> str:
        """One line for the status line and the log."""
        return f"memory: {self.mode} ({self.reason})"

    def plain(self) -> dict:
        return {"mode": self.mode, "reason": self.reason, "peak_bytes": self.peak_bytes,
                "available_bytes": self.available_bytes, "device": self.device, "ram_bytes": self.ram_bytes,
                "estimates": dict(self.estimates)}

    def next_mode(self) -> str | None:
        """The next mode down the ladder, None after the last."""
        at = self.ladder.index(self.mode) if self.mode in self.ladder else len(self.ladder)
        return self.ladder[at + 1] if at + 1 < len(self.ladder) else None

    def fitting_after(self, mode: str) -> str | None:
        """The first mode after `mode` whose estimate fits what is free, else None."""
        start = self.ladder.index(mode) + 1 if mode in self.ladder else len(self.ladder)
        for later in self.ladder[start:]:
            if self.estimates.get(later, 0) <= self.available_bytes * HEADROOM:
                return later
        return None

    def with_mode(self, mode: str, reason: str) -> "MemoryPlan":
        return MemoryPlan(mode, reason, self.estimates.get(mode, 0), self.available_bytes, self.device,
                          self.ram_bytes, self.estimates, mode == "batch-split", self.ladder)


# --- the estimate --------------------------------------------------------------------------------

def component_bytes(pipeline: Any) -> dict[str, int]:
    """Bytes of each torch module of the pipeline: parameter count x dtype size, buffers included
    (meta tensors of a sequentially offloaded model count too)."""
    import torch

    return {name: module_bytes(module) for name, module in getattr(pipeline, "components", {}).items()
            if isinstance(module, torch.nn.Module)}


def module_bytes(module: Any) -> int:
    """Parameter and buffer bytes of a torch module; 0 for anything else."""
    if not hasattr(module, "parameters"):
        return 0
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


@dataclass(frozen=True)
class Shape:
    """What a job's calls are made of, in numbers (the planner reads no pipeline)."""

    width: int
    height: int
    batch: int = 1
    guidance: bool = True  # classifier-free guidance doubles the denoiser's batch
    dtype_bytes: int = 2
    latent_scale: int = 8  # pixels per latent position on a side
    denoiser_channels: int = 320  # the denoiser's base width (a UNet's first block, a DiT's inner dim)
    vae_channels: int = 128  # the VAE decoder's channels at full resolution
    vae_tile: int = 512  # pixels on a side of a VAE tile


def shape_of(pipeline: Any, width: int, height: int, batch: int, guidance: bool = True) -> Shape:
    """The numbers `estimate` needs, read from the pipeline's configs (the defaults of SD 1.x otherwise)."""
    import torch

    denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
    vae = getattr(pipeline, "vae", None)
    dtype_bytes = 4
    if isinstance(denoiser, torch.nn.Module):
        dtype_bytes = next(denoiser.parameters()).element_size()
    dconfig = getattr(denoiser, "config", {}) or {}
    blocks = dconfig.get("block_out_channels")
    channels = blocks[0] if blocks else (dconfig.get("num_attention_heads") or 0) * (dconfig.get("attention_head_dim") or 0)
    vconfig = getattr(vae, "config", {}) or {}
    vblocks = vconfig.get("block_out_channels") or [128, 256, 512, 512]
    tile = getattr(vae, "tile_sample_min_size", None) or vconfig.get("sample_size") or 512
    tile = tile[0] if isinstance(tile, (list, tuple)) else tile
    return Shape(width, height, batch, guidance, dtype_bytes, 2 ** (len(vblocks) - 1), channels or 320, vblocks[0], int(tile))


def estimate(components: dict[str, int], shape: Shape, extra_bytes: int = 0) -> dict[str, int]:
    """Estimated peak bytes on the device for each mode: the weights resident at once plus the
    activations of the heaviest stage (denoiser or VAE decode) that run beside them.

    - denoiser activations: batch x (2 with guidance) x latent positions x base channels x dtype x
      DENOISER_ACTIVATIONS;
    - VAE decode: batch x pixels x decoder channels x dtype x VAE_ACTIVATIONS; sliced it is one image,
      tiled one tile (with a quarter more for the overlap);
    - none: every weight; vae-tiling: every weight, the VAE tiled and sliced; model-offload: one model
      at a time (the denoiser with the add-ons' modules, or the VAE, or a text encoder); sequential:
      a block at a time (an eighth of the largest model stands in for it); batch-split: sequential with
      one image per call.
    `extra_bytes`: modules the add-ons hand the pipeline (ControlNets), resident beside the denoiser."""
    s = shape
    positions = max(1, s.width // s.latent_scale) * max(1, s.height // s.latent_scale)
    cfg = 2 if s.guidance else 1

    def denoise(batch: int) -> int:
        return batch * cfg * positions * s.denoiser_channels * s.dtype_bytes * DENOISER_ACTIVATIONS

    def decode(batch: int, tiled: bool) -> int:
        if not tiled:
            return batch * s.width * s.height * s.vae_channels * s.dtype_bytes * VAE_ACTIVATIONS
        side_w, side_h = min(s.width, s.vae_tile), min(s.height, s.vae_tile)
        return int(1.25 * side_w * side_h * s.vae_channels * s.dtype_bytes * VAE_ACTIVATIONS)

    total = sum(components.values()) + extra_bytes
    denoiser = components.get("unet") or components.get("transformer") or 0
    vae = components.get("vae", 0)
    largest = max(components.values(), default=0)
    others = max((b for n, b in components.items() if n not in ("unet", "transformer", "vae")), default=0)
    block = largest // 8
    return {
        "none": total + max(denoise(s.batch), decode(s.batch, False)),
        "vae-tiling": total + max(denoise(s.batch), decode(s.batch, True)),
        "model-offload": max(denoiser + extra_bytes + denoise(s.batch), vae + decode(s.batch, True), others),
        "sequential-offload": block + max(denoise(s.batch), decode(s.batch, True)),
        "batch-split": block + max(denoise(1), decode(1, True)),
    }


# --- what is free --------------------------------------------------------------------------------

def resident_bytes(pipeline: Any, device: str) -> int:
    """Bytes of the pipeline's weights already on `device` (they count as free for its own job)."""
    import torch

    kind = device.split(":")[0]
    total = 0
    for module in getattr(pipeline, "components", {}).values():
        if isinstance(module, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers())
                         if t.device.type == kind)
    return total


def free_bytes(device: str) -> int:
    """What the device has free now: CUDA's free memory plus what torch's cache holds unused; on the
    CPU (and MPS, which shares it) the available RAM."""
    if device.startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info()
        free += torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
        # torch.cuda.set_per_process_memory_fraction caps this process below what the card has free.
        fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda: 1.0)()
        if fraction < 1.0:
            free = min(free, int(total * fraction) - torch.cuda.memory_allocated())
        return int(max(free, 0))
    return available_ram()


def available_ram() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: assume plenty, the OOM retry still guards the call


# --- the choice ----------------------------------------------------------------------------------

def plan(components: dict[str, int], shape: Shape, device: str, free: int, forced: str = "auto",
         extra_bytes: int = 0, limit: int = 0, offloadable: bool = True, ram_free: int = 0) -> MemoryPlan:
    """The mode for a job: `forced` (--memory-mode, the setting) when it is not "auto", else the first
    mode of the ladder whose estimate fits `free` (capped at `limit` bytes when that is set); with
    nothing fitting, the last one. `free` counts the pipeline's weights already on the device.
    `offloadable` False (add-on modules beside the pipeline's own on a GPU, which diffusers' offload
    hooks do not reach) keeps the ladder at none and vae-tiling. Host RAM: on the CPU it is the device;
    on a GPU an offload mode keeps every weight in RAM, and the reason says so when `ram_free` (when
    given) is less."""
    if forced not in MEMORY_MODE_CHOICES:
        raise ValueError(f"unknown memory mode {forced!r}; choose one of {', '.join(MEMORY_MODE_CHOICES)}")
    estimates = estimate(components, shape, extra_bytes)
    available = min(free, limit) if limit else free
    weights = sum(components.values()) + extra_bytes
    on_cpu = device.startswith("cpu")
    ram = dict(estimates) if on_cpu else {m: weights if m in _OFFLOAD else 0 for m in MODES}
    budget = available * HEADROOM

    ladder = tuple(m for m in MODES if (m != "batch-split" or shape.batch > 1) and (offloadable or m not in _OFFLOAD))

    def made(mode: str, reason: str) -> MemoryPlan:
        if not on_cpu and ram_free and ram[mode] > ram_free:
            reason += f"; its weights need ~{_gb(ram[mode])} of RAM and {_gb(ram_free)} is available"
        return MemoryPlan(mode, reason, estimates[mode], available, device, ram[mode], estimates, mode == "batch-split",
                          ladder)

    need = f"~{_gb(estimates['none'])} as is at {shape.width}x{shape.height}, batch {shape.batch}; {_gb(available)} free"
    if forced != "auto" and not offloadable and forced in _OFFLOAD:
        return made("vae-tiling", f"--memory-mode {forced}, but the add-ons' modules cannot be offloaded; {need}")
    if forced != "auto":
        return made(forced, f"--memory-mode {forced}; {need}")
    for mode in ladder:
        if estimates[mode] <= budget:
            if mode == "none":
                return made(mode, f"fits: {need}")
            return made(mode, f"{need}; {mode} needs ~{_gb(estimates[mode])}")
    last = ladder[-1]
    return made(last, f"nothing fits: {need}, {last} ~{_gb(estimates[last])}; trying {last}")


def _gb(n: int) -> str:
    return f"{n / GB:.2f} GB" if n < 10 * GB else f"{n / GB:.1f} GB"


# --- putting a pipeline in a mode ------------------------------------------------------------------

STATE_KEY = "memory_mode"  # where a loaded model's current mode is kept (its `derived` dict)


def apply(pipeline: Any, state: dict, mode: str, device: str) -> None:
    """Put `pipeline` in `mode` on `device`, undoing the mode it was in (`state[STATE_KEY]`) first:
    offload hooks removed and the weights moved back, VAE tiling and slicing turned off. On the CPU
    offloading moves nothing, so only the VAE switches change."""
    was = state.get(STATE_KEY, "none")
    if was == mode:
        return
    offload, had = _OFFLOAD.get(mode), _OFFLOAD.get(was)
    on_cpu = device.startswith("cpu")
    if offload != had and not on_cpu:
        if had:
            pipeline.remove_all_hooks()
            pipeline.to(device)
        if offload == "model":
            pipeline.enable_model_cpu_offload(device=device)
        elif offload == "sequential":
            pipeline.enable_sequential_cpu_offload(device=device)
    vae = getattr(pipeline, "vae", None)
    small_vae = mode != "none"
    for on, off in (("enable_tiling", "disable_tiling"), ("enable_slicing", "disable_slicing")):
        switch = getattr(vae, on if small_vae else off, None)
        if switch is not None:
            switch()
    state[STATE_KEY] = mode
    log.info("memory mode %s -> %s on %s", was, mode, device)


def release(pipeline: Any, state: dict, device: str) -> None:
    """Back to mode "none" (before the model manager moves a pipeline to another device)."""
    if state.get(STATE_KEY, "none") != "none":
        apply(pipeline, state, "none", device)


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def empty_cache(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
