"""The detailer's measurement on the shipped models (models/README.md, "The detailer on small stars"), small:
one seed of the eight prompts. The default LDM's small stars, upscaled 4x, come back from a unit that finds
"the star" by its word and redraws it with the negative prompt "circle, square, ring" as stars of their
colour, with no pixel changed outside the masks."""

from __future__ import annotations

import re


def test_the_detailer_redraws_the_default_models_small_stars_as_stars(capsys):
    from tools import eval_detailer

    assert eval_detailer.main(["--seeds", "1", "--unit-negative", "circle, square, ring"]) == 0
    out = capsys.readouterr().out
    whole = re.search(r"star of the prompt's colour: before (\d+)/8, after (\d+)/8", out)
    region = re.search(r"own scale: star of the prompt's colour before (\d+)/8, after (\d+)/8", out)
    before, after = int(whole.group(1)), int(whole.group(2))
    zoom_before, zoom_after = int(region.group(1)), int(region.group(2))
    assert before <= 2 and zoom_before <= 2  # measured 1 and 2: blobs
    assert after >= 5 and zoom_after >= 6  # measured 6 and 7
    assert "colour of the largest object right after: 8/8" in out
    assert re.search(r"pixels changed outside the masks: 0 \(inside: [1-9]", out)
    sharp = re.search(r"Lanczos ([\d.]+) -> detailer ([\d.]+)", out)
    assert float(sharp.group(2)) > 1.3 * float(sharp.group(1))  # measured 104 -> 179
