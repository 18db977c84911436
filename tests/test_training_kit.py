"""The shared parts of the default models' training script: tokenizer, EMA, schedule, checkpoints, plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tools import kiri_phrasing as P
from tools import kiri_world as W
from tools.training_kit import EMA, build_tokenizer, lr_at, plot_losses, save_ckpt

ROOT = Path(__file__).resolve().parents[1]


def test_the_grammar_tokenizer_encodes_each_word_as_one_token(tmp_path):
    tok = build_tokenizer(tmp_path / "tokenizer", tmp_path / "work", max_len=32)
    for word in P.vocabulary():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    ids = tok("a small red circle on the left, blue background", padding="max_length", max_length=32).input_ids
    assert len(ids) == 32
    assert tok.decode(tok("a large green star").input_ids, skip_special_tokens=True) == "a large green star"


def test_ema_follows_the_weights_slowly_and_copies_back():
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.zero_()
    ema = EMA({"m": model}, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for step in range(200, 205):
        ema.update({"m": model}, step)
    shadow = ema.shadow["m"]["weight"]
    assert 0.3 < float(shadow.mean()) < 0.6  # 1 - 0.9**5 = 0.41
    ema.copy_to({"m": model})
    assert torch.equal(model.weight, shadow)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    rates = [lr_at(s, 1000, 1e-3, warmup=100, floor=0.1) for s in range(1000)]
    assert rates[0] < rates[50] < rates[99] <= 1e-3
    assert max(rates) == rates[99] and all(a >= b for a, b in zip(rates[100:], rates[101:]))
    assert abs(rates[-1] - 1e-4) < 1e-5


def test_checkpoints_are_written_whole(tmp_path):
    path = tmp_path / "run" / "ckpt.pt"
    save_ckpt(path, step=7, weights=torch.ones(3))
    assert not list(path.parent.glob("*.tmp"))
    assert torch.load(path, weights_only=True)["step"] == 7


def test_loss_plot_is_a_picture(tmp_path):
    losses = list(np.exp(-np.linspace(0, 3, 400)) + 0.01)
    evals = [{"step": 100, "colour": 0.5, "shape": 0.2, "position": 0.3}, {"step": 300, "colour": 0.9, "shape": 0.4, "position": 0.5}]
    plot_losses(tmp_path / "loss.png", losses, "test", evals)
    image = np.asarray(Image.open(tmp_path / "loss.png"))
    assert image.shape == (450, 800, 3) and image.std() > 5


def test_training_script_lists_its_commands():
    done = subprocess.run([sys.executable, "tools/train_default_models.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert all(word in done.stdout for word in ("vae", "ldm", "dit", "--resume"))


def test_dit_batches_made_by_worker_processes_are_the_batches_made_in_the_training_process(tmp_path):
    """--workers (the GPU run's batch makers, spawned) must not change what the DiT trains on: each
    step's pictures, captions (with the curriculum's mix), dropped captions, noise and timesteps."""
    import random
    from functools import partial

    from tools import ldm_kit as T
    from tools import train_dit as D

    tok = build_tokenizer(tmp_path / "tokenizer", tmp_path / "work", max_len=T.MAX_LEN)
    rng = random.Random(0)
    scenes = [W.sample_scene(rng, held_out="exclude") for _ in range(64)]
    saved = dict(D._BATCHES)
    D._BATCHES.update(seed=3, n=len(scenes), batch=16, scenes=scenes, tokenize=partial(T.tokenize, tok),
                      empty=T.tokenize(tok, [""])[0], shape=(4, 16, 16), time="uniform", logit_mean=0.0)
    try:
        def mix_for(step):
            return D.TEMPLATE_ONLY if step < 2 else P.DEFAULT_MIX

        here = [D.dit_batch(step, mix_for(step)) for step in range(4)]
        source = D.BatchSource(workers=1, depth=4)
        try:
            made = [source.get(step, mix_for) for step in range(4)]
            assert source.pool is not None  # the worker answered: nothing fell back to this process
        finally:
            source.close()
    finally:
        D._BATCHES.clear()
        D._BATCHES.update(saved)
    for ours, theirs in zip(here, made):
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    assert not torch.equal(here[0][1], here[3][1])  # steps differ, and the template steps' captions are template ones
    captions = [tok.decode(ids, skip_special_tokens=True) for ids in here[0][1]]
    assert all(c == "" or "background" in c for c in captions)
