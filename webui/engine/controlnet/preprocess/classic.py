"""Preprocessors that need no weights: OpenCV and numpy, after sd-webui-controlnet's algorithms."""

from __future__ import annotations

from ._cv import cv2
import numpy as np

from .image import at_resolution, processing_size, resize_to
from .registry import Preprocessor, Slider

RESOLUTION = Slider("Resolution", 512, 64, 2048, 8)
SHUFFLE_RESOLUTION = 512  # sd-webui-controlnet fixes shuffle's processing size
SHUFFLE_SEED = 0


def none(image, resolution, a=None, b=None, **_):
    return image


def invert(image, resolution, a=None, b=None, **_):
    return 255 - image


def canny(image, resolution, a, b, **_):
    return at_resolution(image, resolution, lambda x: cv2.Canny(x, int(a), int(b)), kind="binary")


def _xdog(x: np.ndarray, threshold: float) -> np.ndarray:
    g1 = cv2.GaussianBlur(x.astype(np.float32), (0, 0), 0.5)
    g2 = cv2.GaussianBlur(x.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255).astype(np.uint8)
    result = np.zeros(x.shape[:2], dtype=np.uint8)
    result[2 * (255 - dog.astype(np.int32)) > threshold] = 255
    return result


def scribble_xdog(image, resolution, a, b=None, **_):
    return at_resolution(image, resolution, lambda x: _xdog(x, a), kind="binary")


def _lineart_standard(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    g = cv2.GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(g - x, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(strong)) if strong.size else 16.0)
    intensity *= 127
    return intensity.clip(0, 255).astype(np.uint8)


def lineart_standard(image, resolution, a=None, b=None, **_):
    return at_resolution(image, resolution, _lineart_standard)


def _sobel_edges(x: np.ndarray, sigma: float) -> np.ndarray:
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.sqrt(gx * gx + gy * gy)
    if sigma > 0:
        magnitude = cv2.GaussianBlur(magnitude, (0, 0), sigma)
    top = float(np.percentile(magnitude, 99.5))
    if top <= 1e-6:
        return np.zeros(grey.shape, np.uint8)
    return (np.sqrt((magnitude / top).clip(0, 1)) * 255).round().astype(np.uint8)


def softedge_sobel(image, resolution, a, b=None, **_):
    return at_resolution(image, resolution, lambda x: _sobel_edges(x, a))


def tile_resample(image, resolution, a, b=None, **_):
    if a < 1.1:  # sd-webui-controlnet leaves the image alone below 1.1
        return image
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, int(w / a)), max(1, int(h / a))), interpolation=cv2.INTER_AREA)
    return resize_to(small, (h, w), kind="smooth")


def blur_gaussian(image, resolution, a, b=None, **_):
    return at_resolution(image, resolution, lambda x: cv2.GaussianBlur(x, (0, 0), float(a)))


def _noise_disk(rng: np.random.Generator, h: int, w: int, f: int) -> np.ndarray:
    noise = rng.uniform(0, 1, size=((h // f) + 2, (w // f) + 2)).astype(np.float32)
    noise = cv2.resize(noise, (w + 2 * f, h + 2 * f), interpolation=cv2.INTER_CUBIC)[f:f + h, f:f + w]
    noise -= noise.min()
    return noise / max(float(noise.max()), 1e-6)


def shuffle(image, resolution, a, b=None, **_):
    """Content shuffle: a smooth random flow field remaps the picture (ControlNet's ContentShuffleDetector)."""
    h_raw, w_raw = image.shape[:2]
    h, w = processing_size((h_raw, w_raw), SHUFFLE_RESOLUTION)
    x = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC if h > h_raw else cv2.INTER_AREA)
    rng = np.random.default_rng(int(a))
    flow_x = _noise_disk(rng, h, w, 256) * float(w - 1)
    flow_y = _noise_disk(rng, h, w, 256) * float(h - 1)
    result = cv2.remap(x, flow_x, flow_y, cv2.INTER_LINEAR)
    return resize_to(result, (h_raw, w_raw), kind="smooth")


def classic_preprocessors() -> list[Preprocessor]:
    return [
        Preprocessor("none", none, label="None: the picture itself is the control map"),
        Preprocessor("invert", invert, aliases=("invert (from white bg & black line)",),
                     label="Invert: a drawing with black lines on white becomes white lines on black"),
        Preprocessor("canny", canny, label="Canny edges: thin outlines of shapes", resolution=RESOLUTION,
                     threshold_a=Slider("Low Threshold", 100, 1, 255, 1),
                     threshold_b=Slider("High Threshold", 200, 1, 255, 1)),
        Preprocessor("scribble_xdog", scribble_xdog, label="Scribble (XDoG): bold sketch lines from a picture",
                     resolution=RESOLUTION, threshold_a=Slider("XDoG Threshold", 32, 1, 64, 1)),
        Preprocessor("lineart_standard", lineart_standard, aliases=("lineart_standard (from white bg & black line)",),
                     label="Line art: dark lines of a drawing or picture as white lines on black",
                     resolution=RESOLUTION),
        Preprocessor("softedge_sobel", softedge_sobel, label="Soft edges: soft gradient outlines, no fine detail",
                     resolution=RESOLUTION, threshold_a=Slider("Blur Sigma", 1.5, 0, 16, 0.1)),
        Preprocessor("tile_resample", tile_resample, label="Tile: a lower-resolution copy, to add detail on top",
                     threshold_a=Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01)),
        Preprocessor("blur_gaussian", blur_gaussian, label="Blur: a blurred copy, for the tile model",
                     resolution=RESOLUTION, threshold_a=Slider("Sigma", 9.0, 0.01, 64.0, 0.01)),
        Preprocessor("shuffle", shuffle, label="Shuffle: the picture's colours and textures, scrambled",
                     threshold_a=Slider("Seed", SHUFFLE_SEED, 0, 2**31 - 1, 1)),
    ]
