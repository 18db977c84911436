"""What the two default models' training shares (tools/train_default_models.py trains the VAE and the
LDM, tools/train_dit.py the DiT): the world's training data and captions, the tokenizer, the VAE, the
text encoders, the held-out scores and the export of a finished pipeline. Both trainers import this
module and neither imports the other's training.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_phrasing as P  # noqa: E402
from tools import kiri_world as W  # noqa: E402
from tools.make_portable import make_portable  # noqa: E402
from tools.training_kit import build_tokenizer  # noqa: E402

TRAIN_DIR = ROOT / ".train"
CHECKPOINTS = ROOT / "models" / "checkpoints"
MAX_LEN = 32  # tokens per prompt (the longest grammar caption has 21)
TEXT_DIM = 64
N_TRAIN = 20000  # training scenes (latents are encoded once and cached)
DATA_SEED = 0


def load_tokenizer():
    from transformers import CLIPTokenizer

    folder = TRAIN_DIR / "tokenizer"
    if not (folder / "tokenizer_config.json").exists():
        return build_tokenizer(folder, TRAIN_DIR, MAX_LEN)
    tok = CLIPTokenizer.from_pretrained(folder)
    missing = [w for w in P.vocabulary() if len(tok(w, add_special_tokens=False).input_ids) != 1]
    if missing:  # made for an older caption grammar: the new words would reach the model as characters
        print(f"rebuilding the tokenizer in {folder}: {len(missing)} caption words are not single tokens ({', '.join(missing[:8])}...)")
        return build_tokenizer(folder, TRAIN_DIR, MAX_LEN)
    return tok


def tokenize(tok, texts: list[str]) -> torch.Tensor:
    return tok(texts, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt").input_ids


def training_data(n: int = N_TRAIN, seed: int = DATA_SEED) -> tuple[np.ndarray, list[str]]:
    path = TRAIN_DIR / f"data_{n}_{seed}.npz"
    if path.exists():
        d = np.load(path)
        return d["images"], [str(c) for c in d["captions"]]
    t0 = time.time()
    images, captions, _ = W.dataset(n, seed=seed, held_out="exclude")
    TRAIN_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images, captions=np.array(captions))
    print(f"rendered {n} scenes in {time.time() - t0:.0f} s")
    return images, captions


def training_scenes(n: int = N_TRAIN, seed: int = DATA_SEED) -> list:
    """The scenes behind ``training_data`` (the same random draws, without rendering)."""
    rng = random.Random(seed)
    return [W.sample_scene(rng, held_out="exclude") for _ in range(n)]


def batch_captions(scenes: list, idx, step: int, seed: int, mix: dict[str, float]) -> list[str]:
    """A caption for each picture of a step's batch, drawn from the phrasing families of ``mix``;
    seeded by the step, so a resumed run draws the same captions."""
    rng = random.Random(seed * 1_000_003 + step + 17)
    return [P.sample_phrase(scenes[int(i)], rng, mix)[0] for i in idx]


def format_mix(mix: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in mix.items())


def check_resume_mix(st: dict, mix: dict[str, float]) -> None:
    saved = st.get("phrasings", {"template": 1.0})  # checkpoints from before the free phrasings
    if {k: round(v, 6) for k, v in saved.items()} != {k: round(v, 6) for k, v in mix.items()}:
        raise SystemExit(f"the checkpoint was trained with --phrasings {format_mix(saved)}, not {format_mix(mix)}")


def free_eval_set(families: list[str], n: int = 24, seed: int = 99) -> list[tuple[str, object]]:
    """(caption, Spec) pairs: held-out scenes with held-out phrasings of the given families."""
    rng = random.Random(seed + 1)
    scenes = W.eval_prompts(n, seed=seed)
    return [P.phrase(s, families[i % len(families)], rng, split="eval") for i, s in enumerate(scenes)]


def free_adherence(images: np.ndarray, pairs: list) -> dict[str, float]:
    scores = [P.score_spec(im, spec) for im, (_, spec) in zip(images, pairs)]
    out = {}
    for k in ("colour", "shape", "position"):
        vals = [s[k] for s in scores if s[k] is not None]
        out[f"free_{k}"] = float(np.mean(vals)) if vals else float("nan")
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64), layers_per_block=1, latent_channels=4, norm_num_groups=8,
        sample_size=64, mid_block_add_attention=False,
    )


def load_vae():
    from diffusers import AutoencoderKL

    folder = TRAIN_DIR / "vae"
    if not (folder / "config.json").exists():
        raise SystemExit("no trained VAE in .train/vae: run `python tools/train_default_models.py vae` first")
    vae = AutoencoderKL.from_pretrained(folder)
    vae.register_to_config(shift_factor=0.0)  # SD3 pipelines read it; SD ones ignore it
    vae.eval().requires_grad_(False)
    return vae


def cached_latents(vae, device: str = "cpu") -> torch.Tensor:
    """Scaled latent means of the training pictures, encoded once (on ``device``; returned on the CPU)."""
    path = TRAIN_DIR / f"latents_{N_TRAIN}_{DATA_SEED}.pt"
    stamp = (TRAIN_DIR / "vae" / "diffusion_pytorch_model.safetensors").stat().st_mtime
    if path.exists():
        st = torch.load(path)
        if st.get("vae_mtime") == stamp:
            return st["latents"]
    images, _ = training_data()
    out = []
    vae.to(device)
    with torch.no_grad():
        for i in tqdm(range(0, len(images), 500), desc="encoding latents"):
            batch = to_tensor(images[i: i + 500]).to(device)
            out.append((vae.encode(batch).latent_dist.mean * vae.config.scaling_factor).cpu())
    vae.to("cpu")
    lat = torch.cat(out)
    torch.save({"latents": lat, "vae_mtime": stamp}, path)
    return lat


def make_text_encoder(tok, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=len(tok), hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM, projection_dim=TEXT_DIM,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=MAX_LEN,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def adherence(images: np.ndarray, scenes: list) -> dict[str, float]:
    scores = [W.score(im, sc) for im, sc in zip(images, scenes)]
    return {k: float(np.mean([s[k] for s in scores])) for k in ("colour", "shape", "position", "size")}


def save_pipeline(pipe, out: Path, tok) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for sub in out.iterdir():  # replace a previous export, keep nothing stale
        if sub.is_dir():
            shutil.rmtree(sub)
    pipe.save_pretrained(out)
    make_portable(out)  # text encoders with the text_model.* keys older transformers expect
    source = Path(tok.name_or_path) if Path(tok.name_or_path or "-").is_dir() else TRAIN_DIR / "tokenizer"
    for folder in ("tokenizer", "tokenizer_2"):  # the tokenizer's own files, byte for byte
        if (out / folder).is_dir():
            for name in ("vocab.json", "merges.txt"):
                shutil.copy(source / name, out / folder / name)
    (out / "kiri_examples.json").write_text(json.dumps(example_prompts(), indent=1))


DIT_DEFAULT = {"patch": 2, "layers": 4, "heads": 3}  # stage 1 of kiri-shapes-dit (stage 2, shipped, is --dit-patch 1)


def example_prompts() -> list[str]:
    """The text box's examples: short, loose prompts as newcomers type them, then full captions."""
    return [
        "a red circle",
        "blue star on the left",
        "a big yellow square in the middle, grey background",
        "on a black background, a small white ring at the top",
        "a large red circle in the centre, blue background",
        "a small yellow star on the left, black background",
        "a large green triangle at the bottom, white background",
        "a large purple circle on the left and a large yellow square on the right, white background",
        "a small black star at the top and a large red ring at the bottom, green and white background",
    ]
