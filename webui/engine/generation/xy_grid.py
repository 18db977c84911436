"""X/Y grid: the same prompt and seed across two axes (sampler x steps, or x CFG...), one image per cell;
each cell runs as the txt2img job kind's work, so a hires fix on the base request applies to every cell.

`Prompt S/R` is A1111's search and replace: its first value is the text to find, and each value
replaces it in the prompt and the negative prompt (the first value's cell is the prompt as written);
its values are comma-separated as CSV, so "a, b" in quotes is one value."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Generator

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.infotext import build_infotext
from webui.engine.core.jobs import Job
from webui.engine.core.outputs import dated_dir, save_image
from webui.engine.generation.requests import Txt2ImgRequest, random_seed

if TYPE_CHECKING:
    from PIL import Image

    from webui.engine.context import Engine

MAX_CELLS = 64
# Axis name -> (request field, parser of one value).
AXES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "Sampler": ("sampler_name", str),
    "Schedule type": ("scheduler", str),
    "Steps": ("steps", int),
    "CFG scale": ("cfg_scale", float),
    "Seed": ("seed", int),
    "Prompt S/R": ("prompt", str),  # and negative_prompt: see _cell_changes
}
NOTHING = "Nothing"
PROMPT_SR = "Prompt S/R"
_RANGE = re.compile(r"^\s*(-?[\d.]+)\s*-\s*(-?[\d.]+)\s*(?:\(\s*\+\s*([\d.]+)\s*\)|\[\s*(\d+)\s*\])?\s*$")


@dataclass
class GridResult:
    grid: "Image.Image | None" = None
    images: list["Image.Image"] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    path: Any = None
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)


def parse_axis(axis: str, text: str) -> list[Any]:
    """Values of one axis: `a, b, c`, or for numbers `10-30 (+10)` (step) and `1-9 [5]` (count)."""
    if axis == NOTHING:
        return [None]
    if axis not in AXES:
        raise InvalidRequest("axis", f"unknown axis {axis!r}; valid: {', '.join([NOTHING, *AXES])}")
    if axis == PROMPT_SR:
        values = [v.strip() for row in csv.reader(io.StringIO(text), skipinitialspace=True) for v in row]
        if not values or not values[0]:
            raise InvalidRequest("axis", "Prompt S/R: the first value is the text to search for in the prompt")
        return values
    _, parse = AXES[axis]
    values: list[Any] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = _RANGE.match(part) if parse is not str else None
        try:
            if match:
                values.extend(_expand(parse, *match.groups()))
            else:
                values.append(parse(part))
        except ValueError as exc:
            raise InvalidRequest("axis", f"{axis}: {part!r} is not a valid value") from exc
    if not values:
        raise InvalidRequest("axis", f"give at least one {axis} value")
    return values


def _expand(parse: Callable[[str], Any], start: str, end: str, step: str | None, count: str | None) -> list[Any]:
    a, b = float(start), float(end)
    if count:
        n = int(count)
        points = [a + (b - a) * i / max(n - 1, 1) for i in range(n)]
    else:
        s = float(step) if step else 1.0
        if s <= 0:
            raise ValueError("step must be positive")
        points = []
        while a + len(points) * s <= b + 1e-9 and len(points) <= MAX_CELLS:
            points.append(a + len(points) * s)
    return [v if parse is float else parse(str(round(v))) for v in points]


def xy_grid(engine: "Engine", base: Txt2ImgRequest, x_axis: str, x_text: str, y_axis: str = NOTHING, y_text: str = "",
            job: Job | None = None) -> GridResult:
    xs, ys = parse_axis(x_axis, x_text), parse_axis(y_axis, y_text)
    if len(xs) * len(ys) > MAX_CELLS:
        raise InvalidRequest("axis", f"{len(xs)} x {len(ys)} cells is more than the {MAX_CELLS} a grid may hold")
    for axis, values in ((x_axis, xs), (y_axis, ys)):
        if axis == PROMPT_SR and values[0] not in base.prompt and values[0] not in (base.negative_prompt or ""):
            raise InvalidRequest("axis", f"Prompt S/R did not find {values[0]!r} in the prompt or negative prompt")
    seed = base.seed if base.seed != -1 else random_seed()
    cells = [(y, x) for y in ys for x in xs]
    requests = []
    for y, x in cells:
        changes: dict[str, Any] = {"seed": seed, "batch_size": 1, "n_iter": 1}
        prompt, negative = base.prompt, base.negative_prompt or ""
        for axis, value, values in ((x_axis, x, xs), (y_axis, y, ys)):  # X first, then Y, as A1111 applies them
            if axis == PROMPT_SR:
                prompt, negative = prompt.replace(values[0], value), negative.replace(values[0], value)
            elif axis != NOTHING:
                changes[AXES[axis][0]] = value
        if prompt != base.prompt or negative != (base.negative_prompt or ""):
            changes.update(prompt=prompt, negative_prompt=negative)
        requests.append(replace(base, **changes))  # replace() re-validates each cell
    job = job or Job(kind="xy_grid")
    # Each cell is the work a plain text to image request gets (hooks, add-on defaults, and a variant
    # such as the hires fix another capability adds), every cell checked before the grid is queued; a
    # part of the grid's job (engine.part_work: with a dispatcher, a turn on a free replica).
    works = [engine.part_work("txt2img", request) for request in requests]
    return engine.run(job.owner, "xy_grid", lambda j: _cells(engine, base, works, seed, (x_axis, x_text, xs), (y_axis, y_text, ys), j), job)


def _cells(engine: "Engine", base: Txt2ImgRequest, works: list[Callable[[Job], Generator]], seed: int, x: tuple, y: tuple,
           job: Job) -> Generator[None, None, GridResult]:
    """Each cell is a stage of the grid's job: one Interrupt stops the grid, and other users get
    turns between cells."""
    (x_axis, x_text, xs), (y_axis, y_text, ys) = x, y
    result = GridResult()
    for number, work in enumerate(works, 1):
        job.label = f"Cell {number}/{len(works)}"
        cell = yield from work(job)
        result.warnings.extend(w for w in cell.warnings if w not in result.warnings)
        if cell.interrupted or not cell.images:
            result.interrupted = True
            break
        result.images.extend(cell.images)
        result.infotexts.extend(cell.infotexts)
        if number < len(works):
            yield
    if result.images:
        result.grid = draw_grid(result.images, [_label(x_axis, v) for v in xs], [_label(y_axis, v) for v in ys])
        info = build_infotext(base.prompt, base.negative_prompt, {
            "Seed": seed, "Size": "{}x{}".format(*result.images[0].size),  # a hires fix's size, when the cells have one
            "X/Y grid": f"{x_axis}: {x_text}" + (f"; {y_axis}: {y_text}" if y_axis != NOTHING else ""),
        })
        if engine.settings.save_images:
            result.path = save_image(result.grid, dated_dir(engine.outputs_for(job.owner), "txt2img-grids"), info, seed)
    return result


def _label(axis: str, value: Any) -> str:
    if axis == NOTHING:
        return ""
    if value is None:
        return f"{axis}: default"
    return f"{axis}: {value:g}" if isinstance(value, float) else f"{axis}: {value}"


LABEL_PAD = 4  # pixels between a label and the cells or the image's edge
MIN_FONT = 10


@dataclass
class Label:
    """One label's lines, the font size they fit at, and the box they take in the grid (x0, y0, x1, y1)."""

    lines: list[str]
    size: int
    box: tuple[int, int, int, int]


@dataclass
class GridLayout:
    size: tuple[int, int]
    cells: list[tuple[int, int, int, int]]
    labels: list[Label]


def _wrap(draw: Any, text: str, font: Any, width: int) -> list[str]:
    """Greedy word wrap at `width` pixels; a word wider than that is broken between characters."""
    lines: list[str] = []
    for word in text.split():
        line = f"{lines[-1]} {word}" if lines else word
        if lines and _width(draw, line, font) <= width:
            lines[-1] = line
            continue
        while _width(draw, word, font) > width and len(word) > 1:
            cut = max(1, max(i for i in range(1, len(word) + 1) if i == 1 or _width(draw, word[:i], font) <= width))
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines or [""]


def _width(draw: Any, text: str, font: Any) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def _fit(draw: Any, text: str, width: int, height: int | None, largest: int) -> tuple[Any, list[str], int]:
    """The largest font (from `largest` down to MIN_FONT) at which `text`, wrapped at `width`, fits
    `width` x `height`; at MIN_FONT the wrapped text as it is."""
    from PIL import ImageFont

    for size in range(largest, MIN_FONT - 1, -1):
        font = ImageFont.load_default(size=size)
        lines = _wrap(draw, text, font, width)
        fits = all(_width(draw, line, font) <= width for line in lines)
        if fits and (height is None or _line_height(font) * len(lines) <= height):
            return font, lines, _line_height(font)
    return font, lines, _line_height(font)


def _fit_row(draw: Any, text: str, width: int, height: int, largest: int) -> tuple[Any, list[str], int]:
    """A row label: wrapped to fit the row's height, the band widened when even the smallest font is too tall."""
    for widen in (1, 2, 3, 4, 6, 8):
        font, lines, lh = _fit(draw, text, width * widen, height, largest)
        if lh * len(lines) <= height:
            break
    return font, lines, lh


def _line_height(font: Any) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent


def grid_layout(cell: tuple[int, int], count: int, column_labels: list[str], row_labels: list[str]) -> GridLayout:
    """Where cells and labels go: each column label wrapped (or shrunk) to its column's width above it,
    each row label to a left band beside its row; no label overlaps another, a cell, or the edge."""
    from PIL import Image, ImageDraw

    w, h = cell
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    largest = max(MIN_FONT + 2, min(28, w // 8))
    columns = max(1, len(column_labels))
    rows = (count + columns - 1) // columns
    column_fits = [_fit(draw, t, w - 2 * LABEL_PAD, None, largest) if t else None for t in column_labels]
    top = max((lh * len(lines) for _, lines, lh in filter(None, column_fits)), default=0)
    top = top + 2 * LABEL_PAD if top else 0
    band = max(w, 8 * largest)  # the row labels' column: at least a cell wide
    row_fits = [_fit_row(draw, t, band - 2 * LABEL_PAD, h - 2 * LABEL_PAD, largest) if t else None for t in row_labels[:rows]]
    left = max((max(_width(draw, line, font) for line in lines) for font, lines, _ in filter(None, row_fits)), default=0)
    left = left + 2 * LABEL_PAD if left else 0
    cells = [(left + (i % columns) * w, top + (i // columns) * h, left + (i % columns + 1) * w, top + (i // columns + 1) * h)
             for i in range(count)]
    labels = []
    for c, fit in enumerate(column_fits):
        if fit:
            font, lines, lh = fit
            width = max(_width(draw, line, font) for line in lines)
            x0 = left + c * w + (w - width) // 2
            y0 = (top - lh * len(lines)) // 2
            labels.append(Label(lines, font.size, (x0, y0, x0 + width, y0 + lh * len(lines))))
    for r, fit in enumerate(row_fits):
        if fit:
            font, lines, lh = fit
            width = max(_width(draw, line, font) for line in lines)
            x0 = (left - width) // 2
            y0 = top + r * h + (h - lh * len(lines)) // 2
            labels.append(Label(lines, font.size, (x0, y0, x0 + width, y0 + lh * len(lines))))
    return GridLayout((left + columns * w, top + rows * h), cells, labels)


def draw_grid(images: list["Image.Image"], column_labels: list[str], row_labels: list[str]) -> "Image.Image":
    """Tile cell images row by row, with labels above the columns and left of the rows, each wrapped
    or shrunk to fit its column or row (grid_layout)."""
    from PIL import Image, ImageDraw, ImageFont

    layout = grid_layout(images[0].size, len(images), column_labels or [""], row_labels)
    grid = Image.new("RGB", layout.size, "white")
    for image, (x0, y0, _, _) in zip(images, layout.cells):
        grid.paste(image.convert("RGB"), (x0, y0))
    draw = ImageDraw.Draw(grid)
    for label in layout.labels:
        font = ImageFont.load_default(size=label.size)
        x0, y0, x1, _ = label.box
        lh = _line_height(font)
        for n, line in enumerate(label.lines):
            # each line centred in the label's box, its ink inside the box (textbbox measured it from the origin)
            ox, oy, ex, _ = draw.textbbox((0, 0), line, font=font)
            x = x0 + (x1 - x0 - (ex - ox)) // 2 - ox
            draw.text((x, y0 + n * lh), line, fill="black", font=font)
    return grid
