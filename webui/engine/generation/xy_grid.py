"""X/Y grid: the same prompt and seed across two axes (sampler x steps, or x CFG...), one image per cell;
each cell runs as the txt2img job kind's work, so a hires fix on the base request applies to every cell."""

from __future__ import annotations

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
}
NOTHING = "Nothing"
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
    seed = base.seed if base.seed != -1 else random_seed()
    cells = [(y, x) for y in ys for x in xs]
    requests = []
    for y, x in cells:
        changes = {"seed": seed, "batch_size": 1, "n_iter": 1}
        for axis, value in ((x_axis, x), (y_axis, y)):
            if axis != NOTHING:
                changes[AXES[axis][0]] = value
        requests.append(replace(base, **changes))  # replace() re-validates each cell
    job = job or Job(kind="xy_grid")
    # Each cell is the work a plain text to image request gets (hooks, add-on defaults, and a variant
    # such as the hires fix another capability adds), every cell checked before the grid is queued.
    works = [engine.job_kinds.work_for(engine, "txt2img", request)[1] for request in requests]
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


def draw_grid(images: list["Image.Image"], column_labels: list[str], row_labels: list[str]) -> "Image.Image":
    """Tile cell images row by row, with labels above the columns and left of the rows."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = images[0].size
    font_size = max(12, min(28, w // 8))
    font = ImageFont.load_default(size=font_size)
    top = font_size * 2 if any(column_labels) else 0
    left = max((int(font.getlength(t)) for t in row_labels), default=0) + font_size if any(row_labels) else 0
    columns = len(column_labels)
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (left + columns * w, top + rows * h), "white")
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB"), (left + (i % columns) * w, top + (i // columns) * h))
    for c, text in enumerate(column_labels):
        draw.text((left + c * w + w / 2, top / 2), text, fill="black", font=font, anchor="mm")
    for r, text in enumerate(row_labels[:rows]):
        draw.text((left / 2, top + r * h + h / 2), text, fill="black", font=font, anchor="mm")
    return grid
