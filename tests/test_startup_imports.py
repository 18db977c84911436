"""The first page needs no torch, diffusers or transformers: building the engine and every tab over
the shipped models imports none of them (they load in the background once the page is served)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "diffusers", "transformers", "cv2", "av", "accelerate", "safetensors")

SCRIPT = """
import json, sys, pathlib
from webui.bootstrap import build_engine
from webui.engine.settings import Settings
engine = build_engine(Settings(models_dir=pathlib.Path(sys.argv[1]), outputs_dir=pathlib.Path(sys.argv[2])))
engine.catalog.scan()
from webui.server import ServeOptions
from webui.ui.app import build
build(engine, pathlib.Path(sys.argv[2]) / "settings.json")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
""" % (HEAVY,)


def test_building_every_tab_imports_no_heavy_library(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "models"), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert {m.split(".")[0] for m in loaded} == set(), f"imported before the page: {loaded}"
