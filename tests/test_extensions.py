"""The extension system: isolated loading, hooks, enable/disable, installing, and the UI gate."""

from __future__ import annotations

import os
import shutil
import sys
import subprocess
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from webui.bootstrap import build_engine
from webui.engine.settings import Settings
from webui.engine.core.devices import DeviceChoice
from webui.engine.generation.requests import Txt2ImgRequest
from webui.extensions import ExtensionError, install_extension

EXAMPLES = Path(__file__).resolve().parent.parent / "extensions"


def write_extension(root: Path, name: str, body: str, *, override: bool = False, entry: str = "main.py:register") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "extension.toml").write_text(
        f'name = "{name}"\nversion = "0.1"\nentry = "{entry}"\noverride = {str(override).lower()}\n'
    )
    (folder / "main.py").write_text(textwrap.dedent(body))
    return folder


def engine_for(models_dir, tmp_path, ext_dir, **kw) -> Engine:
    settings = Settings(models_dir=models_dir, outputs_dir=tmp_path / "out", extensions_dir=ext_dir,
                        default_model="tiny-sd", **kw)
    return build_engine(settings, DeviceChoice("cpu"))


def status(engine: Engine) -> dict[str, tuple[str, str | None]]:
    return {e.name: (e.status, e.error) for e in engine.extensions.extensions}


def test_broken_extensions_are_listed_and_kiri_starts(models_dir, tmp_path):
    ext = tmp_path / "ext"
    write_extension(ext, "syntax-error", "def register(kiri) oops\n")
    write_extension(ext, "raises", "def register(kiri):\n    kiri.add_sampler('Half', function=lambda *a, **k: None)\n    raise RuntimeError('boom')\n")
    write_extension(ext, "no-entry", "x = 1\n")
    (ext / "no-manifest").mkdir()
    write_extension(ext, "good", "def register(kiri):\n    kiri.add_sampler('Good', scheduler='diffusers:EulerDiscreteScheduler')\n")
    engine = engine_for(models_dir, tmp_path, ext)
    found = status(engine)
    assert found["syntax-error"][0] == "error" and "SyntaxError" in found["syntax-error"][1]
    assert found["raises"][0] == "error" and "boom" in found["raises"][1]
    assert found["no-entry"][0] == "error" and "no function 'register'" in found["no-entry"][1]
    assert found["no-manifest"][0] == "error" and "no extension.toml" in found["no-manifest"][1]
    assert found["good"] == ("loaded", None)
    # A failing entry point registers nothing at all, not half of what it meant to.
    assert "Half" not in engine.samplers.names() and "Good" in engine.samplers.names()
    # The built-ins still load, through the same loader.
    assert found["kiri-samplers"] == ("loaded", None) and "DPM++ 2M" in engine.samplers.names()


def test_duplicate_sampler_refused_unless_override(models_dir, tmp_path, caplog):
    ext = tmp_path / "ext"
    body = "def register(kiri):\n    kiri.add_sampler('Euler', scheduler='diffusers:DDIMScheduler')\n"
    write_extension(ext, "clash", body)
    engine = engine_for(models_dir, tmp_path, ext)
    assert status(engine)["clash"][0] == "error" and "already registered" in status(engine)["clash"][1]
    assert "EulerDiscrete" in str(engine.samplers.get("Euler").scheduler)

    ext2 = tmp_path / "ext2"
    write_extension(ext2, "replacer", body, override=True)
    with caplog.at_level("WARNING"):
        engine = engine_for(models_dir, tmp_path, ext2)
    assert "DDIMScheduler" in str(engine.samplers.get("Euler").scheduler)
    assert any("overrides" in r.message for r in caplog.records)


def test_disabled_extension_is_listed_but_not_loaded(models_dir, tmp_path):
    engine = engine_for(models_dir, tmp_path, EXAMPLES, disabled_extensions=["example-dpmpp-2s-a"],
                        enabled_extensions=["example-dpmpp-2s-a", "example-euler-scheduler"])
    assert status(engine)["example-dpmpp-2s-a"] == ("disabled", None)
    assert "DPM++ 2S a" not in engine.samplers.names()
    assert "Euler Karras (example scheduler)" in engine.samplers.names()


def test_hooks_change_requests_and_images_and_see_steps(models_dir, tmp_path):
    ext = tmp_path / "ext"
    write_extension(ext, "hooks", """
        from PIL import ImageOps
        seen = {"steps": [], "loaded": []}

        def register(kiri):
            kiri.before_generate(lambda request: setattr(request, "steps", 3) or request)
            kiri.after_generate(lambda request, images: [ImageOps.invert(im) for im in images])
            kiri.on_step(lambda info: seen["steps"].append((info.step, tuple(info.latents.shape))))
            kiri.on_model_loaded(lambda model: seen["loaded"].append(model.name))
            kiri.on_step(lambda info: 1 / 0)  # a broken hook is logged and skipped
    """)
    engine = engine_for(models_dir, tmp_path, ext)
    plain = engine_for(models_dir, tmp_path, None)
    request = dict(prompt="a circle", steps=9, width=64, height=64, seed=2, sampler_name="Euler")
    hooked = engine.txt2img(Txt2ImgRequest(**request))
    import sys

    seen = sys.modules["kiri_extensions.hooks"].seen
    assert [s for s, _ in seen["steps"]] == [1, 2, 3] and seen["steps"][0][1] == (1, 4, 32, 32)
    assert seen["loaded"] == ["tiny-sd"]
    assert "Steps: 3" in hooked.infotexts[0]
    reference = plain.txt2img(Txt2ImgRequest(**{**request, "steps": 3})).images[0]
    assert np.array_equal(255 - np.asarray(reference), np.asarray(hooked.images[0]))


def test_install_from_folder_zip_and_git(tmp_path):
    source = write_extension(tmp_path / "src", "installable", "def register(kiri):\n    pass\n")
    target = tmp_path / "extensions"
    assert (install_extension(str(source), target) / "main.py").exists()
    with pytest.raises(ExtensionError, match="already installed"):
        install_extension(str(source), target)

    archive = tmp_path / "ext.zip"
    shutil.move(str(source), str(tmp_path / "src" / "zipped"))
    (tmp_path / "src" / "zipped" / "extension.toml").write_text('name = "zipped"\nversion = "1"\nentry = "main.py:register"\n')
    with zipfile.ZipFile(archive, "w") as z:
        for f in (tmp_path / "src" / "zipped").iterdir():
            z.write(f, f"zipped/{f.name}")
    assert (install_extension(str(archive), target) / "extension.toml").exists()

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escape.py", "x")
    with pytest.raises(ExtensionError, match="outside its folder"):
        install_extension(str(evil), target)

    repo = write_extension(tmp_path / "git", "from-git", "def register(kiri):\n    pass\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "x"], check=True)
    assert (install_extension(f"file://{repo}", target) / "main.py").exists()
    with pytest.raises(ExtensionError, match="not a folder, a .zip file or a git URL"):
        install_extension("/no/such/place", target)


def test_the_readme_example_extension_works(models_dir, tmp_path):
    """The complete example in extensions/README.md loads and samples, so the docs stay true."""
    import re

    readme = (EXAMPLES / "README.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "def register" in block)
    write_extension(tmp_path / "ext", "readme-example", code)
    engine = engine_for(models_dir, tmp_path, tmp_path / "ext")
    assert status(engine)["readme-example"] == ("loaded", None)
    request = dict(prompt="a circle", sampler_name="Euler Maruyama", steps=3, width=64, height=64, seed=4)
    first, again = (engine.txt2img(Txt2ImgRequest(**request)).images[0] for _ in range(2))
    assert np.array_equal(np.asarray(first), np.asarray(again)) and np.asarray(first).std() > 0


def test_the_readme_deferred_example_imports_the_sampler_only_when_it_runs(models_dir, tmp_path):
    import re

    readme = (EXAMPLES / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "def register" in b]
    sampler_code = blocks[0].split("\n\ndef register")[0] + "\n"
    deferred_register = next(b for b in blocks if "kiri.later" in b)
    folder = write_extension(tmp_path / "ext", "deferred-example", deferred_register, entry="register.py:register")
    (folder / "main.py").rename(folder / "register.py")
    (folder / "sampler.py").write_text(sampler_code + "LOADED = True\n")
    engine = engine_for(models_dir, tmp_path, tmp_path / "ext")
    assert status(engine)["deferred-example"] == ("loaded", None)
    module = "kiri_extensions.deferred_example.sampler"
    assert module not in sys.modules  # registered, not yet imported
    image = engine.txt2img(Txt2ImgRequest(prompt="a circle", sampler_name="Euler Maruyama", steps=3, width=64, height=64, seed=4)).images[0]
    assert sys.modules[module].LOADED and np.asarray(image).std() > 0


def test_a_deferred_file_that_is_missing_fails_at_start_and_one_that_breaks_fails_clearly_at_use(models_dir, tmp_path):
    from webui.engine.core.errors import KiriError

    ext = tmp_path / "ext"
    write_extension(ext, "missing", "def register(kiri):\n    kiri.add_sampler('Nope', function=kiri.later('absent.py:f'))\n")
    broken = write_extension(ext, "broken", "def register(kiri):\n    kiri.add_sampler('Broken', scheduler=kiri.later('cls.py:C'))\n")
    (broken / "cls.py").write_text("raise ImportError('no such library')\n")
    engine = engine_for(models_dir, tmp_path, ext)
    assert status(engine)["missing"][0] == "error" and "absent.py" in status(engine)["missing"][1]
    assert status(engine)["broken"] == ("loaded", None)
    with pytest.raises(KiriError, match="no such library"):
        engine.txt2img(Txt2ImgRequest(prompt="a circle", sampler_name="Broken", steps=2, width=64, height=64, seed=1))


def test_loading_the_shipped_extensions_does_not_import_torch(tmp_path):
    """Extensions load before the page is served; torch and diffusers must wait for the first image."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from webui.bootstrap import build_engine
        from webui.engine.settings import Settings
        engine = build_engine(Settings(models_dir=Path({str(tmp_path)!r}), outputs_dir=Path({str(tmp_path)!r}),
                                 extensions_dir=Path({str(EXAMPLES)!r}),
                                 enabled_extensions=["example-dpmpp-2s-a", "example-euler-scheduler"]))
        loaded = [e.name for e in engine.extensions.extensions if e.status == "loaded"]
        assert {{"example-dpmpp-2s-a", "example-euler-scheduler"}} <= set(loaded), loaded
        heavy = [m for m in ("torch", "diffusers", "transformers") if m in sys.modules]
        assert not heavy, heavy
    """)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_extension_adds_a_model_kind_its_loader_and_a_job_kind(models_dir, tmp_path):
    """The verbs the built-in capabilities register with, from an extension: a kind of model file, its
    loader through the shared manager, a job kind /kiri/v1/jobs can run, and a variant of txt2img."""
    body = textwrap.dedent('''
        from dataclasses import dataclass

        @dataclass
        class CountRequest:
            name: str = ""

        def load_note(entry, device, allow_pickle):
            from safetensors.numpy import load_file

            return load_file(str(entry.path))

        def count_work(engine, request):
            def work(job):
                tensors = engine.models.get_of_kind("note", request.name).model
                return {"words": int(tensors["words"].size)}
                yield
            return work

        def tagged(engine, request):
            def work(job):
                return "the variant ran"
                yield
            return work

        def register(kiri):
            kiri.add_model_kind("note", ("notes",), "Note")
            kiri.add_loader("note", load_note)
            kiri.add_job_kind("count_words", CountRequest, count_work)
            kiri.extend_job_kind("txt2img", lambda request: request.prompt == "use the variant", tagged)
    ''')
    write_extension(tmp_path / "ext", "notes", body)
    (models_dir / "notes").mkdir(exist_ok=True)
    from safetensors.numpy import save_file

    save_file({"words": np.zeros(3, dtype=np.float32)}, str(models_dir / "notes" / "hello.safetensors"))
    try:
        engine = engine_for(models_dir, tmp_path, tmp_path / "ext")
        assert status(engine)["notes"] == ("loaded", None)
        engine.catalog.scan()
        assert [e.name for e in engine.catalog.of_kind("note")] == ["hello"]
        job = engine.submit_plain("count_words", {"name": "hello"}, "local")
        assert engine.jobs.wait(job, 60) == {"words": 3}
        assert engine.txt2img(Txt2ImgRequest("use the variant", steps=1, width=64, height=64)) == "the variant ran"
        assert engine.txt2img(Txt2ImgRequest("a circle", steps=1, width=64, height=64)).images
    finally:
        shutil.rmtree(models_dir / "notes")
