"""X/Y grid: every cell generated with the same seed, labelled and saved as one image."""

from __future__ import annotations

import numpy as np
import pytest

from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.requests import Txt2ImgRequest
from webui.engine.generation.xy_grid import parse_axis, xy_grid


def test_axis_syntax():
    assert parse_axis("Steps", "5-20 (+5)") == [5, 10, 15, 20]
    assert parse_axis("CFG scale", "1-7 [4]") == [1.0, 3.0, 5.0, 7.0]
    assert parse_axis("Sampler", "Euler, DPM++ 2M") == ["Euler", "DPM++ 2M"]
    with pytest.raises(InvalidRequest, match="not a valid value"):
        parse_axis("Steps", "ten")
    with pytest.raises(InvalidRequest, match="unknown axis"):
        parse_axis("Colour", "red")


def test_grid_cells_match_single_generations(engine):
    base = Txt2ImgRequest("a red circle", steps=2, width=64, height=64, seed=7)
    result = xy_grid(engine, base, "Sampler", "Euler, DDIM", "Steps", "1, 2")
    assert len(result.images) == 4
    assert result.grid.size[0] > 2 * 64 and result.grid.size[1] > 2 * 64  # cells plus labels
    assert result.path is not None and result.path.parent.parent.name == "txt2img-grids"
    # Cell (row Steps=2, column DDIM) is the same image as generating it alone.
    alone = engine.txt2img(Txt2ImgRequest("a red circle", sampler_name="DDIM", steps=2, width=64, height=64, seed=7))
    assert np.array_equal(np.asarray(result.images[3]), np.asarray(alone.images[0]))
    assert "Sampler: DDIM" in result.infotexts[3] and "Steps: 2" in result.infotexts[3]


def test_grid_refuses_bad_cells_before_work(engine):
    base = Txt2ImgRequest("a red circle", steps=2, width=64, height=64)
    with pytest.raises(InvalidRequest, match="steps must be between"):
        xy_grid(engine, base, "Steps", "2, 500")
    with pytest.raises(InvalidRequest, match="more than the 64"):
        xy_grid(engine, base, "Steps", "1-10", "CFG scale", "1-10")


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("cell", [(64, 64), (32, 48), (512, 512)])
def test_grid_labels_fit_their_cells_without_overlap(cell):
    """Labels are wrapped or shrunk to their column (or row): no label box overlaps another label or a
    cell or crosses the image's edge, and every dark pixel outside the cells is inside a label box."""
    from PIL import Image

    from webui.engine.generation.xy_grid import draw_grid, grid_layout

    columns = ["Sampler: Euler a", "Sampler: DDIM", "Sampler: UniPC", "Sampler: DPM++ 2M SDE Karras (example scheduler)"]
    rows = ["Steps: 5", "Steps: 10", "CFG scale: 7.5 with a much longer explanation than fits"]
    images = [Image.new("RGB", cell, (40 * i % 255, 90, 200)) for i in range(len(columns) * len(rows))]
    layout = grid_layout(cell, len(images), columns, rows)
    grid = draw_grid(images, columns, rows)
    assert grid.size == layout.size and len(layout.labels) == len(columns) + len(rows)
    boxes = [label.box for label in layout.labels]
    for i, box in enumerate(boxes):
        assert 0 <= box[0] < box[2] <= grid.width and 0 <= box[1] < box[3] <= grid.height, box
        assert not any(_overlap(box, c) for c in layout.cells), box
        assert not any(_overlap(box, other) for other in boxes[i + 1:]), box
    ink = np.asarray(grid.convert("L")) < 250
    for x0, y0, x1, y1 in layout.cells:
        ink[y0:y1, x0:x1] = False
    for x0, y0, x1, y1 in boxes:
        ink[y0:y1, x0:x1] = False
    assert not ink.any(), "label pixels outside their boxes (cut or overprinted)"
    for image, (x0, y0, x1, y1) in zip(images, layout.cells):  # the cells are pasted untouched
        assert grid.crop((x0, y0, x1, y1)).tobytes() == image.tobytes()


def test_prompt_search_and_replace_axis(engine):
    assert parse_axis("Prompt S/R", 'red, blue, "green, dark"') == ["red", "blue", "green, dark"]
    base = Txt2ImgRequest("a red circle", negative_prompt="red noise", steps=2, width=64, height=64, seed=3)
    result = xy_grid(engine, base, "Prompt S/R", "red, blue", "Steps", "1, 2")
    assert len(result.images) == 4
    assert result.infotexts[0].startswith("a red circle\nNegative prompt: red noise")
    assert result.infotexts[3].startswith("a blue circle\nNegative prompt: blue noise")
    alone = engine.txt2img(Txt2ImgRequest("a blue circle", negative_prompt="blue noise", steps=2, width=64, height=64, seed=3))
    assert np.array_equal(np.asarray(result.images[3]), np.asarray(alone.images[0]))
    assert not np.array_equal(np.asarray(result.images[2]), np.asarray(result.images[3]))
    with pytest.raises(InvalidRequest, match="did not find 'square'"):
        xy_grid(engine, base, "Prompt S/R", "square, star")
