"""The GPU fast path: which speed switches a checkpoint gets, decided from plain facts about the
device and the model's family, like the dtype plan (core/devices.py).

`probe(device)` reads the facts (the card's compute capability, bf16, which attention packages and
diffusers features are installed); `fast_path_plan(facts, family, options)` is a pure function of
them, so every rule is tested on the CPU with made-up facts; `apply(pipeline, plan)` switches a
loaded pipeline and returns the plan as it was applied (a backend that fails falls back, and says so).

What it switches, on CUDA only (the CPU and MPS keep diffusers' defaults):
- TF32 matmuls and convolutions on Ampere and newer (compute capability 8.0+): the fp32 work left
  (an fp32 VAE decode, the schedulers' math) runs on the tensor cores.
- Attention: PyTorch SDPA, diffusers' default processors. For a denoiser whose attention goes
  through diffusers' dispatcher (Flux), the fastest installed exact backend instead: FlashAttention 3
  on Hopper (9.0), FlashAttention 2 on Ampere+, when the package imports. `attention` forces a name.
- channels_last memory format for the UNet (convolutions on tensor cores, Volta 7.0+) and for a VAE
  that decodes in half precision.
- VAE tiling and slicing are the memory planner's (core/memory.py: the vae-tiling mode), per job.
- Optional, off by default: regional torch.compile of the denoiser's repeated blocks (`compile`:
  diffusers' compile_repeated_blocks, else each transformer block), so the first image waits for one
  block's compile and a new size recompiles one block; fp8 weight storage with layerwise casting
  (`fp8_weights`: weights kept in float8_e4m3fn, each layer cast up to the compute dtype as it runs).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

log = logging.getLogger(__name__)

# Families whose denoiser is a UNet (convolutions: channels_last helps).
UNET_FAMILIES = frozenset({"sd1", "sd2", "sdxl"})
# Families whose denoiser's attention goes through diffusers' attention dispatcher (set_attention_backend
# reaches it); the others call SDPA directly in their processors, so a backend name would change nothing.
DISPATCHER_FAMILIES = frozenset({"flux"})
# Exact attention backends of diffusers' dispatcher, fastest first: (name, python module, least capability).
EXACT_BACKENDS = (("_flash_3", "flash_attn_interface", (9, 0)), ("flash", "flash_attn", (8, 0)))
ATTENTION_CHOICES = ("auto", "sdpa", "flash", "_flash_3", "sage", "xformers", "native")
# Block lists compiled one by one when a denoiser declares no _repeated_blocks.
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "joint_transformer_blocks")


@dataclass(frozen=True)
class DeviceFacts:
    """What the fast path needs to know about the device and the installed packages; plain data."""

    device: str  # "cuda", "mps", "cpu"
    name: str = ""
    capability: tuple[int, int] = (0, 0)  # CUDA compute capability (8, 0) = A100, (9, 0) = H100/H200
    bf16: bool = False
    backends: tuple[str, ...] = ()  # dispatcher backends whose package imports ("flash", "_flash_3", ...)
    dispatcher: bool = False  # diffusers has ModelMixin.set_attention_backend
    regional_compile: bool = False  # diffusers has ModelMixin.compile_repeated_blocks
    layerwise_casting: bool = False  # diffusers has ModelMixin.enable_layerwise_casting
    fp8: bool = False  # torch has float8_e4m3fn


@dataclass(frozen=True)
class FastPathOptions:
    """The user's switches (Settings / launch flags)."""

    enabled: bool = True  # --no-fast-path turns every switch off
    compile: bool = False  # --compile
    fp8_weights: bool = False  # --fp8-weights
    attention: str = "auto"  # --attention: auto, sdpa, or one of diffusers' backend names


@dataclass(frozen=True)
class FastPathPlan:
    tf32: bool = False
    attention: str = "sdpa"  # "sdpa" (diffusers' default processors) or a dispatcher backend name
    channels_last: tuple[str, ...] = ()  # components put in channels_last
    compile: str = ""  # "", "repeated-blocks" (planned), or as applied: "repeated-blocks", "blocks"
    fp8_storage: bool = False
    notes: tuple[str, ...] = field(default=())  # why something is off, or fell back

    @property
    def on(self) -> bool:
        return bool(self.tf32 or self.channels_last or self.compile or self.fp8_storage or self.attention != "sdpa")

    def text(self) -> str:
        if not self.on:
            return "fast path: off" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        parts = [f"attention {self.attention}"]
        if self.tf32:
            parts.append("tf32")
        if self.channels_last:
            parts.append("channels_last " + "+".join(self.channels_last))
        if self.compile:
            parts.append(f"compiled {self.compile}")
        if self.fp8_storage:
            parts.append("fp8 weights")
        text = "fast path: " + ", ".join(parts)
        return text + (f" ({'; '.join(self.notes)})" if self.notes else "")

    def plain(self) -> dict:
        data = asdict(self)
        data["channels_last"], data["notes"] = list(self.channels_last), list(self.notes)
        return data


def fast_path_plan(facts: DeviceFacts, family: str, options: FastPathOptions = FastPathOptions(),
                   vae_upcast: bool = False, stored: str | None = None) -> FastPathPlan:
    """The switches for a checkpoint of `family` on the device `facts` describes; a pure function.
    `stored`: how the checkpoint's own weights are stored ("fp8", a GGUF type such as "Q8_0"), if not as usual."""
    if facts.device != "cuda":
        return FastPathPlan(notes=(f"{facts.device}: diffusers' defaults",))
    if not options.enabled:
        return FastPathPlan(notes=("turned off (--no-fast-path)",))
    notes: list[str] = []
    cap = tuple(facts.capability)
    tf32 = cap >= (8, 0)
    attention = "sdpa"
    if options.attention not in ("auto", "sdpa"):
        if not facts.dispatcher:
            notes.append(f"attention {options.attention} needs diffusers' set_attention_backend; SDPA")
        elif family not in DISPATCHER_FAMILIES:
            notes.append(f"attention {options.attention}: this family's processors call SDPA directly")
        else:
            attention = options.attention
    elif options.attention == "auto" and facts.dispatcher and family in DISPATCHER_FAMILIES:
        for name, _module, least in EXACT_BACKENDS:
            if name in facts.backends and cap >= least:
                attention = name
                break
    channels_last: tuple[str, ...] = ()
    if cap >= (7, 0):
        channels_last = (("unet",) if family in UNET_FAMILIES else ()) + (() if vae_upcast else ("vae",))
    fp8 = False
    if options.fp8_weights:
        if stored:
            notes.append(f"--fp8-weights: the checkpoint is stored as {stored} already")
        elif facts.layerwise_casting and facts.fp8:
            fp8 = True
        else:
            notes.append("fp8 weights need diffusers' enable_layerwise_casting and torch's float8; not used")
    compile = ""
    if options.compile:
        compile = "repeated-blocks"
        if not facts.regional_compile:
            notes.append("this diffusers has no compile_repeated_blocks: each transformer block is compiled")
    return FastPathPlan(tf32, attention, channels_last, compile, fp8, tuple(notes))


def probe(device: str) -> DeviceFacts:
    """The facts about `device` ("cuda", "cuda:1", "mps", "cpu") and what is installed."""
    import torch

    kind = device.split(":")[0]
    try:
        from diffusers import ModelMixin
    except ImportError:  # pragma: no cover - diffusers is a requirement
        ModelMixin = object
    features = dict(dispatcher=hasattr(ModelMixin, "set_attention_backend"),
                    regional_compile=hasattr(ModelMixin, "compile_repeated_blocks"),
                    layerwise_casting=hasattr(ModelMixin, "enable_layerwise_casting"),
                    fp8=hasattr(torch, "float8_e4m3fn"))
    if kind != "cuda" or not torch.cuda.is_available():
        return DeviceFacts(kind, **features)
    index = torch.device(device).index or 0
    backends = tuple(name for name, module, _least in EXACT_BACKENDS if importlib.util.find_spec(module) is not None)
    return DeviceFacts("cuda", torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)),
                       bool(torch.cuda.is_bf16_supported()), backends, **features)


def denoiser_of(pipeline: Any) -> Any:
    return getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)


def apply(pipeline: Any, plan: FastPathPlan) -> FastPathPlan:
    """Switch `pipeline` (anywhere: weights keep their memory format and hooks when moved) to `plan`;
    returns the plan as applied. TF32 is a process-wide torch switch, turned on, never off."""
    import torch

    notes = list(plan.notes)
    denoiser = denoiser_of(pipeline)
    if plan.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    attention = plan.attention
    if attention != "sdpa" and denoiser is not None:
        try:
            denoiser.set_attention_backend(attention)
        except Exception as exc:  # a package that imports but lacks a kernel for this build, ...
            notes.append(f"attention {attention} failed ({str(exc).splitlines()[0][:120]}); SDPA")
            attention = "sdpa"
    for name in plan.channels_last:
        module = getattr(pipeline, name, None)
        if isinstance(module, torch.nn.Module):
            module.to(memory_format=torch.channels_last)
    fp8 = plan.fp8_storage and denoiser is not None
    if fp8:
        compute = denoiser.dtype
        denoiser.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
        # As for fp8 checkpoints (models/manager._store_fp8): a LoRA added later makes its adapter in the
        # layer's compute_dtype when the layer names one, not in fp8 (in which it could not compute).
        for module in denoiser.modules():
            registry = getattr(module, "_diffusers_hook", None)
            if registry is not None and registry.get_hook("layerwise_casting") is not None:
                module.compute_dtype = compute
    compiled = ""
    if plan.compile and denoiser is not None:
        compiled = compile_blocks(denoiser)
        if not compiled:
            notes.append("no repeated blocks to compile")
    return replace(plan, attention=attention, compile=compiled, fp8_storage=fp8, notes=tuple(notes))


def compile_blocks(denoiser: Any) -> str:
    """Regional torch.compile: diffusers' compile_repeated_blocks where the class names its repeated
    blocks, else every block of its transformer block lists; returns which, or "" if none."""
    if getattr(denoiser, "_repeated_blocks", None) and hasattr(denoiser, "compile_repeated_blocks"):
        # not fullgraph: layerwise casting and the step cache add hooks the graph must run around
        denoiser.compile_repeated_blocks(fullgraph=False)
        return "repeated-blocks"
    compiled = 0
    for list_name in BLOCK_LISTS:
        for block in getattr(denoiser, list_name, None) or ():
            block.compile()
            compiled += 1
    return "blocks" if compiled else ""
