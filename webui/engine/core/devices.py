"""Choosing the torch device and dtype at run time: CUDA, then MPS, else the CPU."""

from __future__ import annotations

from dataclasses import dataclass

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")

# Families whose reference weights are trained in bf16 and overflow in fp16.
BF16_FAMILIES = frozenset({"sd3", "flux", "pixart"})
# Families whose VAE overflows in fp16 (black or NaN pictures) unless fp16-fixed weights are used.
FP16_UNSAFE_VAE_FAMILIES = frozenset({"sdxl"})


@dataclass(frozen=True)
class DtypePlan:
    """Which dtype each component of a checkpoint loads in, and whether the VAE decodes in fp32.

    Dtypes are torch dtype names ("float32", "float16", "bfloat16") so the plan stays plain data;
    `torch_dtype(component)` turns one into the torch object."""

    denoiser: str
    text_encoders: str
    vae: str
    vae_upcast: bool = False  # keep the VAE at `vae` but encode and decode in fp32

    def torch_dtype(self, component: str = "denoiser"):
        import torch

        return getattr(torch, getattr(self, component))


def dtype_policy(family: str, device: str, bf16: bool = False, vae_fp16_fix: bool = False) -> DtypePlan:
    """The dtype of each component for `family` on `device`; a pure function of its arguments.

    - CPU: float32 everywhere (half precision is slow there and some kernels lack it).
    - CUDA: float16, but bfloat16 for SD3/Flux/PixArt when the card supports it (`bf16`): their
      weights were trained in bf16 and overflow in fp16. SDXL's VAE overflows in fp16, so it decodes
      in fp32 unless the checkpoint carries fp16-fixed VAE weights (`vae_fp16_fix`).
    - MPS: float16, with the same VAE rule.
    """
    if device == "cpu":
        return DtypePlan("float32", "float32", "float32", vae_upcast=False)
    if device == "cuda" and family in BF16_FAMILIES and bf16:
        return DtypePlan("bfloat16", "bfloat16", "bfloat16", vae_upcast=False)
    upcast = family in FP16_UNSAFE_VAE_FAMILIES and not vae_fp16_fix
    return DtypePlan("float16", "float16", "float16", vae_upcast=upcast)


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # torch device string: "cuda", "mps", "cpu"

    def bf16_supported(self) -> bool:
        """Whether this card computes in bfloat16 natively (Ampere and newer on NVIDIA)."""
        if self.device != "cuda":
            return False
        import torch

        return bool(torch.cuda.is_bf16_supported())

    def plan_for(self, family: str, vae_fp16_fix: bool = False) -> DtypePlan:
        return dtype_policy(family, self.device, self.bf16_supported(), vae_fp16_fix)

    def dtype_for(self, family: str):
        """The dtype a checkpoint of `family` loads in here (its denoiser's)."""
        return self.plan_for(family).torch_dtype("denoiser")


def resolve_device(requested: str = "auto") -> DeviceChoice:
    """Turn the --device flag into a usable device; an unavailable one is an error, not a fallback."""
    import torch

    if requested not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {requested!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        return DeviceChoice("cuda" if cuda else "mps" if mps else "cpu")
    if requested == "cuda" and not cuda:
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU")
    if requested == "mps" and not mps:
        raise ValueError("--device mps was asked for, but torch sees no Apple GPU")
    return DeviceChoice(requested)


def free_memory(device: str) -> None:
    """Give cached GPU memory back after a model is dropped."""
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()
