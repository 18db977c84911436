"""The DiT's training in resumable chunks (issue 32): a run cut into chunks, each resumed from the
checkpoint the one before left, follows the same loss curve as the run made in one go; the compact
state kept in git between chunks is smaller and follows it closely. A tiny config of the real
classes (SD3Transformer2DModel, CLIPTextModelWithProjection, AutoencoderKL) on random latents."""

from __future__ import annotations

import json

import pytest
import torch

from tests.tiny_models import _tokenizer
from tools import kiri_world as W
from tools.train_default_models import parser
from tools.train_dit import DitData, train_dit
from tools.training_kit import load_state, save_state

STEPS = 8


@pytest.fixture(scope="module")
def data() -> DitData:
    import random

    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[8] * 4, down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=64)  # 64 px pictures from 16 x 16 latents, as Kiri's
    vae.register_to_config(shift_factor=0.0)
    rng = random.Random(0)
    scenes = [W.sample_scene(rng, held_out="exclude") for _ in range(24)]
    return DitData(vae=vae.eval().requires_grad_(False), tok=_tokenizer(), latents=torch.randn(24, 4, 16, 16),
                   scenes=scenes)


def run(data, tmp_path, name: str, *extra: str) -> dict:
    args = parser().parse_args([
        "dit", "--steps", str(STEPS), "--batch", "4", "--threads", "1", "--eval-every", "0", "--eval-phrasings", "",
        "--phrasings", "template", "--dit-layers", "1", "--dit-heads", "1", "--dit-time", "uniform", "--resume",
        "--dit-work", str(tmp_path / name / "work"), "--out", str(tmp_path / name / "out"), *extra])
    return train_dit(args, data)


def state(tmp_path, name: str) -> dict:
    return load_state(tmp_path / name / "work" / "state.safetensors")


def test_a_run_in_chunks_follows_the_curve_of_the_run_in_one_go(data, tmp_path):
    whole = run(data, tmp_path, "whole")
    whole_state = state(tmp_path, "whole")
    assert whole["steps"] == STEPS and len(whole_state["losses"]) == STEPS

    first = run(data, tmp_path, "chunks", "--stop-at", "3")
    assert first["steps"] == 3 and state(tmp_path, "chunks")["step"] == 3
    second = run(data, tmp_path, "chunks", "--stop-at", "6")
    assert second["steps"] == 6
    last = run(data, tmp_path, "chunks")
    chunked = state(tmp_path, "chunks")
    assert last["steps"] == STEPS
    assert chunked["losses"] == whole_state["losses"]  # the same batches, weights and optimizer state, bit for bit
    for part in ("transformer", "text_encoder", "text_encoder_2"):
        for key, value in whole_state[part].items():
            assert torch.equal(chunked[part][key], value), key
    assert [e["step"] for e in chunked["evals"]] == [3, 6, STEPS]  # each chunk's check, once
    log = json.loads((tmp_path / "chunks" / "out" / "train_log.json").read_text())
    assert log["steps"] == STEPS and log["final_eval"]["step"] == STEPS


def test_a_chunk_ends_on_its_minutes_and_the_next_goes_on(data, tmp_path):
    whole = run(data, tmp_path, "whole")
    first = run(data, tmp_path, "timed", "--chunk-minutes", "0.00001")  # up after its first step
    assert first["steps"] == 1
    run(data, tmp_path, "timed")
    assert state(tmp_path, "timed")["losses"] == state(tmp_path, "whole")["losses"]
    assert whole["steps"] == STEPS


def test_the_compact_state_is_smaller_and_keeps_the_run_on_its_curve(data, tmp_path):
    fast = ("--lr", "0.3")  # 0.3 x (step + 1) / 100 in the warm-up: steps large enough for the moments to matter
    run(data, tmp_path, "whole", *fast)
    run(data, tmp_path, "full", "--stop-at", "4", *fast)
    run(data, tmp_path, "compact", "--stop-at", "4", "--compact-state", *fast)
    full_size = (tmp_path / "full" / "work" / "state.safetensors").stat().st_size
    compact_size = (tmp_path / "compact" / "work" / "state.safetensors").stat().st_size
    assert compact_size < 0.75 * full_size
    packed = state(tmp_path, "compact")
    assert "ema" not in packed and all(s["exp_avg"].dtype == torch.bfloat16 for s in packed["opt"]["state"].values())
    run(data, tmp_path, "compact", "--compact-state", *fast)
    whole, resumed = state(tmp_path, "whole")["losses"], state(tmp_path, "compact")["losses"]
    assert resumed[:4] == whole[:4]
    assert resumed[4:] == pytest.approx(whole[4:], rel=1e-2)  # bf16 moments: close, not bit for bit
    # without the optimizer's moments the curve leaves the run's by far more: the state is what keeps it on it
    fresh = state(tmp_path, "full")
    fresh["opt"]["state"] = {}
    save_state(tmp_path / "full" / "work" / "state.safetensors", fresh)
    run(data, tmp_path, "full", *fast)
    lost = state(tmp_path, "full")["losses"]

    def off(curve):
        return max(abs(a - b) for a, b in zip(curve[5:], whole[5:]))  # the steps after the first resumed one

    assert off(resumed) < 0.2 * off(lost), (off(resumed), off(lost))


def test_a_warm_started_stage_starts_from_the_model_in_its_first_chunk_only(data, tmp_path):
    fresh = run(data, tmp_path, "base")
    base = str(tmp_path / "base" / "out")
    run(data, tmp_path, "stage2", "--init-from", base)
    run(data, tmp_path, "stage2-chunks", "--init-from", base, "--stop-at", "4")
    run(data, tmp_path, "stage2-chunks", "--init-from", base)  # resumes its state, not the base model again
    one_go, chunked = state(tmp_path, "stage2")["losses"], state(tmp_path, "stage2-chunks")["losses"]
    assert chunked == one_go
    assert one_go[0] != state(tmp_path, "base")["losses"][0] and fresh["steps"] == STEPS  # it did start from the base


def test_a_state_is_kept_as_safetensors_and_comes_back_whole(tmp_path):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1, betas=(0.9, 0.99))
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    state = {"opt": opt.state_dict(), "losses": [0.5, 0.25], "arch": {"patch": 2}, "name": "x", "none": None,
             "shared": {"a": torch.arange(4.0), "b": torch.arange(4.0)[:2]}}
    save_state(tmp_path / "s.safetensors", state)
    assert (tmp_path / "s.safetensors").read_bytes()[:2] != b"PK"  # not a zip of pickles as torch.save writes
    back = load_state(tmp_path / "s.safetensors")
    assert back["losses"] == [0.5, 0.25] and back["arch"] == {"patch": 2} and back["name"] == "x" and back["none"] is None
    assert list(back["opt"]["state"]) == [0]  # the optimizer's int keys stay ints
    assert torch.equal(back["opt"]["state"][0]["exp_avg_sq"], opt.state_dict()["state"][0]["exp_avg_sq"])
    assert torch.equal(back["shared"]["b"], torch.tensor([0.0, 1.0]))
    again = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    again.load_state_dict(back["opt"])
    assert tuple(again.param_groups[0]["betas"]) == (0.9, 0.99)
