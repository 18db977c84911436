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
