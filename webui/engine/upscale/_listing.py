"""The upscalers there are: the classic resamplers, the model and diffusion upscalers under
models/upscalers/ (read without loading), and, for hires fix only, the latent modes; found by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from webui.engine.core.errors import InvalidRequest

if TYPE_CHECKING:
    from webui.engine.models.catalog import Catalog

# AUTOMATIC1111's latent upscale modes for hires fix: (interpolation, antialias).
LATENT_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


@dataclass(frozen=True)
class Upscaler:
    name: str
    resample: int | None = None  # PIL filter of a classic resampler; None: no resampling ("None") or not classic
    kind: str = "classic"  # classic, model, diffusion, latent
    scale: int = 1  # the model's own factor (1 for classic)
    path: Path | None = None

    @property
    def label(self) -> str:
        """What the dropdowns show: the name, its kind and scale."""
        if self.kind == "classic":
            return self.name if self.name == "None" else f"{self.name} (resampler)"
        if self.kind == "latent":
            return f"{self.name} (latent)"
        return f"{self.name} ({self.kind} x{self.scale})"


def builtin_upscalers() -> list[Upscaler]:
    from PIL import Image

    R = Image.Resampling
    return [Upscaler("None"), Upscaler("Lanczos", R.LANCZOS), Upscaler("Bicubic", R.BICUBIC),
            Upscaler("Nearest", R.NEAREST), Upscaler("Area", R.BOX)]


def model_upscalers(catalog: "Catalog | None") -> list[Upscaler]:
    """The upscaler files and folders under models/upscalers/ (and A1111's ESRGAN/, RealESRGAN/, ...)."""
    from ._models import diffusion_class, guess_scale

    if catalog is None:
        return []
    found = []
    for entry in catalog.of_kind("upscaler"):
        kind = "diffusion" if entry.path.is_dir() else "model"
        if kind == "diffusion" and diffusion_class(entry.path) is None:
            continue
        found.append(Upscaler(entry.name, None, kind, guess_scale(entry.path), entry.path))
    return found


def latent_upscalers() -> list[Upscaler]:
    return [Upscaler(name, None, "latent") for name in LATENT_MODES]


def all_upscalers(catalog: "Catalog | None" = None, latent: bool = False) -> list[Upscaler]:
    return [*(latent_upscalers() if latent else []), *builtin_upscalers(), *model_upscalers(catalog)]


def find_upscaler(name: str | None, field: str = "upscaler_1", catalog: "Catalog | None" = None,
                  latent: bool = False) -> Upscaler:
    """The upscaler called `name` (case-insensitive; a dropdown label works too); an unknown one is
    an InvalidRequest naming `field` and listing the available ones."""
    if name is not None and not isinstance(name, str):
        raise InvalidRequest(field, f"{field} must be an upscaler name (a string)")
    wanted = (name or "None").strip().lower()
    choices = all_upscalers(catalog, latent)
    for upscaler in choices:
        if wanted in (upscaler.name.lower(), upscaler.label.lower()):
            return upscaler
    if catalog is not None:
        catalog.scan()  # a file added since the last scan
        choices = all_upscalers(catalog, latent)
        for upscaler in choices:
            if wanted in (upscaler.name.lower(), upscaler.label.lower()):
                return upscaler
    names = ", ".join(u.name for u in choices)
    raise InvalidRequest(field, f"unknown upscaler {(name or '').strip()[:100]!r} in {field}; available: {names}")

