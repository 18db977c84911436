"""Loading and switching models: bad files are refused and the previous model stays loaded."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
import torch

from webui.bootstrap import build_engine
from webui.engine.settings import Settings
from webui.engine.core.devices import DeviceChoice
from webui.engine.core.errors import ModelLoadError, NoModelAvailable, PickleRefused
from webui.engine.core.jobs import Job
from webui.engine.generation.requests import Txt2ImgRequest


@pytest.fixture()
def own_models(models_dir, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    return root


def make_engine(models_root, tmp_path, **kw) -> Engine:
    settings = Settings(models_dir=models_root, outputs_dir=tmp_path / "out", default_model="tiny-sd", **kw)
    return build_engine(settings, DeviceChoice("cpu"))


def test_truncated_file_keeps_previous_model(own_models, tmp_path):
    source = own_models / "checkpoints" / "tiny-sd-single.safetensors"
    data = source.read_bytes()
    (own_models / "checkpoints" / "broken.safetensors").write_bytes(data[: len(data) // 2])
    engine = make_engine(own_models, tmp_path)
    engine.catalog.scan()
    first = engine.models.get("tiny-sd")
    with pytest.raises(ModelLoadError, match="broken.*previous model stays loaded"):
        engine.models.get("broken")
    assert engine.models.current is first
    assert engine.txt2img(Txt2ImgRequest("a red circle", steps=1, width=64, height=64)).images


def test_corrupt_folder_weights_keep_previous_model(own_models, tmp_path):
    folder = shutil.copytree(own_models / "checkpoints" / "tiny-sd", own_models / "checkpoints" / "bad-folder")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights at all")
    engine = make_engine(own_models, tmp_path)
    engine.catalog.scan()
    first = engine.models.get("tiny-sd")
    with pytest.raises(ModelLoadError, match="bad-folder"):
        engine.models.get("bad-folder")
    assert engine.models.current is first


def test_pickle_refused_unless_allowed_then_weights_only(own_models, tmp_path):
    evil = own_models / "checkpoints" / "evil.ckpt"

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {"x": Payload()}}, evil)
    engine = make_engine(own_models, tmp_path)
    engine.catalog.scan()
    with pytest.raises(PickleRefused, match="--allow-pickle"):
        engine.models.get("evil")
    permissive = make_engine(own_models, tmp_path, allow_pickle=True)
    permissive.catalog.scan()
    with pytest.raises(ModelLoadError, match="could not be read safely"):
        permissive.models.get("evil")


def test_allowed_pickle_of_plain_tensors_loads(own_models, tmp_path):
    from safetensors.torch import load_file

    state = load_file(own_models / "checkpoints" / "tiny-sd-single.safetensors")
    torch.save({"state_dict": state}, own_models / "checkpoints" / "plain.ckpt")
    engine = make_engine(own_models, tmp_path, allow_pickle=True)
    engine.catalog.scan()
    loaded = engine.models.get("plain")
    assert loaded.family == "sd1"
    request = dict(prompt="a red circle", steps=2, width=64, height=64, seed=3, sampler_name="Euler")
    from_pickle = engine.txt2img(Txt2ImgRequest(**request)).images[0]
    from_folder = engine.txt2img(Txt2ImgRequest(**request, model="tiny-sd")).images[0]
    assert from_pickle.tobytes() == from_folder.tobytes()


def test_lru_cache_keeps_recent_models(own_models, tmp_path):
    engine = make_engine(own_models, tmp_path, model_cache_size=2)
    engine.catalog.scan()
    sd = engine.models.get("tiny-sd")
    sd3 = engine.models.get("tiny-sd3")
    assert engine.models.get("tiny-sd") is sd  # still cached
    engine.models.get("tiny-sd-single")  # evicts the least recently used: tiny-sd3
    assert engine.models.get("tiny-sd3") is not sd3


def test_switching_model_waits_for_running_job(own_models, tmp_path):
    engine = make_engine(own_models, tmp_path)
    engine.catalog.scan()
    engine.models.get("tiny-sd")
    job = Job()
    in_job = threading.Event()

    def slow_step(j: Job) -> None:
        in_job.set()
        time.sleep(0.05)

    job.listeners.append(slow_step)
    worker = threading.Thread(target=engine.txt2img, args=(Txt2ImgRequest("a circle", steps=4, width=64, height=64), job))
    worker.start()
    assert in_job.wait(30)
    engine.load_model("tiny-sd3")  # a job of the same owner: it runs once the generation has finished
    # The switch could only take its turn once the job had finished its image.
    assert job.images_done == 1
    worker.join(60)


def test_no_models_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    engine = make_engine(tmp_path / "empty", tmp_path)
    with pytest.raises(NoModelAvailable, match="no checkpoint found"):
        engine.txt2img(Txt2ImgRequest("a circle", width=64, height=64))
