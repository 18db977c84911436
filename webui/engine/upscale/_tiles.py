"""Overlapping tiles with feathered seams, for every model upscaler and for SD upscale.

A tile is run with `overlap` pixels of context on the sides it shares with a neighbour; each
output tile is weighted by a ramp that is zero over the outer quarter of the overlap (where a
convolution saw the tile's edge instead of the picture) and rises to one at the overlap's inner
end. Where two ramps meet they add up to a blend of two outputs that both saw enough context, so
a network whose receptive field is within that quarter gives the untiled result exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generator

MIN_TILE = 32


@dataclass
class TileRun:
    """What a tiled run did: the tile size it ended with, tiles done of all, and its warnings."""

    tile: int
    tiles_done: int = 0
    tiles_total: int = 0
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)


def spans(length: int, tile: int, overlap: int, balanced: bool = False) -> list[tuple[int, int]]:
    """[start, end) spans of `tile` covering 0..length, neighbours sharing at least `overlap`.

    balanced: as few spans as cover the length, each shortened to what covering it takes and
    spread evenly (512 pixels in tiles of 256 sharing 16: three of 182, not three of 256)."""
    if length <= tile:
        return [(0, length)]
    stride = max(1, tile - overlap)
    if balanced:
        count = -(-(length - overlap) // stride)
        size = min(tile, -(-(length + (count - 1) * overlap) // count))
        return [(i * (length - size) // (count - 1), i * (length - size) // (count - 1) + size) for i in range(count)]
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return [(s, s + tile) for s in starts]


def ramp(length: int, overlap: int, fade_start: bool, fade_end: bool):
    """1-D weights: 0 over the first quarter of the overlap at a faded end, rising linearly to 1."""
    import torch

    weights = torch.ones(length)
    if overlap <= 0:
        return weights
    dead = overlap // 4
    rise = max(1, overlap - 2 * dead)
    positions = torch.arange(length, dtype=torch.float32)
    edge = ((positions - dead + 1) / rise).clamp(0, 1)
    if fade_start:
        weights = torch.minimum(weights, edge)
    if fade_end:
        weights = torch.minimum(weights, edge.flip(0))
    return weights


def run_tiles(fn: Callable[[Any], Any], x, scale: int, tile: int, overlap: int, run: TileRun,
              on_tile: Callable[[int, int], bool] | None = None) -> Generator[None, None, Any]:
    """`fn` over overlapping tiles of x (1, C, H, W); returns the (1, C', H*scale, W*scale) output.

    Yields after each tile (a turn of the job). `on_tile(done, total)` returns False to stop:
    finished tiles are kept and the rest is filled with a bicubic upscale of the input."""
    import torch
    import torch.nn.functional as F

    _, _, height, width = x.shape
    overlap = min(overlap, tile // 2)
    rows, cols = spans(height, tile, overlap, balanced=True), spans(width, tile, overlap, balanced=True)
    run.tiles_total, run.tiles_done = len(rows) * len(cols), 0
    out = None
    weight = torch.zeros(1, 1, height * scale, width * scale)
    for r, (y0, y1) in enumerate(rows):
        for c, (x0, x1) in enumerate(cols):
            piece = fn(x[:, :, y0:y1, x0:x1]).float().cpu()
            if out is None:
                out = torch.zeros(1, piece.shape[1], height * scale, width * scale)
            wy = ramp((y1 - y0) * scale, overlap * scale, r > 0, r < len(rows) - 1)
            wx = ramp((x1 - x0) * scale, overlap * scale, c > 0, c < len(cols) - 1)
            mask = (wy[:, None] * wx[None, :])[None, None]
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] += piece * mask
            weight[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] += mask
            run.tiles_done += 1
            if on_tile is not None and not on_tile(run.tiles_done, run.tiles_total):
                run.interrupted = True
                break
            yield
        if run.interrupted:
            break
    if out is None or run.interrupted:  # the tiles not done: a bicubic upscale of the input
        fallback = F.interpolate(x.float().cpu(), scale_factor=scale, mode="bicubic").clamp(0, 1)
        if out is None:
            return fallback
        done = weight > 0
        return torch.where(done, out / weight.clamp_min(1e-8), fallback[:, : out.shape[1]])
    # In place: a large picture holds the output and its weights, and no full-size temporaries.
    return out.div_(weight.clamp_min_(1e-8))


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def run_tiles_retrying(fn, x, scale: int, tile: int, overlap: int, on_tile=None) -> Generator[None, None, tuple[Any, TileRun]]:
    """run_tiles, starting over with half the tile size when a tile runs out of memory (down to MIN_TILE)."""
    from webui.engine.core.devices import free_memory
    from webui.engine.core.errors import KiriError

    run = TileRun(tile)
    while True:
        try:
            out = yield from run_tiles(fn, x, scale, run.tile, overlap, run, on_tile)
            return out, run
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
            if not is_out_of_memory(exc):
                raise
            free_memory(str(getattr(x, "device", "cpu")))
            if run.tile // 2 < MIN_TILE:
                raise KiriError(f"out of memory even with {run.tile}-pixel tiles; free memory or use a smaller image") from exc
            run.warnings.append(f"Out of memory with {run.tile}-pixel tiles: retried with {run.tile // 2}-pixel tiles.")
            run.tile //= 2


def auto_tile_size(device: str, channels: int = 64, scale: int = 4) -> int:
    """A tile side that fits the free memory: activations of `channels` floats per input pixel at
    a few layers at once, and the output; capped at 512 on CPU (shorter turns) and 1024 on GPU."""
    per_pixel = 4 * (channels * 6 + 3 * scale * scale * 4)
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info()
        budget, cap = free * 0.5, 1024
    else:
        import psutil

        budget, cap = psutil.virtual_memory().available * 0.25, 512
    side = int((budget / per_pixel) ** 0.5) // 32 * 32
    return max(MIN_TILE * 2, min(cap, side))
