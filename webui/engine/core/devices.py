"""Choosing the torch device and dtype at run time: CUDA, then MPS, else the CPU."""

from __future__ import annotations

from dataclasses import dataclass

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")

# Families whose reference weights are trained in bf16 and overflow in fp16.
BF16_FAMILIES = {"sd3", "flux", "pixart"}


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # torch device string: "cuda", "mps", "cpu"

    def dtype_for(self, family: str):
        import torch

        if self.device == "cpu":
            return torch.float32
        if self.device == "cuda" and family in BF16_FAMILIES and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16


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
