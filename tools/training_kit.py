"""The parts of tools/train_default_models.py that are not about one model: the grammar's
tokenizer, weight EMA, the learning-rate schedule, atomic checkpoints and the loss plot."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch

from tools import kiri_phrasing as P


# ------------------------------------------------------------------------------------------------
# Tokenizer: a CLIP byte-level BPE whose merges turn every word of the caption grammar into one token.

def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_tokenizer(folder: Path, work_dir: Path, max_len: int):
    """Write vocab.json + merges.txt (+ tokenizer.json) for transformers.CLIPTokenizer into folder."""
    from transformers import CLIPTokenizer

    b2u = _bytes_to_unicode()
    seqs = {}
    for w in P.vocabulary():
        s = [b2u[b] for b in w.encode()]
        s[-1] += "</w>"
        seqs[w] = s
    merges: list[tuple[str, str]] = []
    while True:  # plain BPE training on the word list: merge the most frequent pair until words are whole
        counts: dict[tuple[str, str], int] = {}
        for s in seqs.values():
            for pair in zip(s, s[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == pair:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    vocab = list(b2u.values())
    vocab += [v + "</w>" for v in vocab]
    for a, b in merges:
        if a + b not in vocab:
            vocab.append(a + b)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tmp = work_dir / "tokenizer_src"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    (tmp / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_len, "tokenizer_class": "CLIPTokenizer"}))
    tok = CLIPTokenizer.from_pretrained(tmp)
    bad = [w for w in P.vocabulary() if len(tok(w, add_special_tokens=False).input_ids) != 1]
    if bad:
        raise RuntimeError(f"words not encoded as one token: {bad}")
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tmp / name, folder / name)
    return CLIPTokenizer.from_pretrained(folder)


# ------------------------------------------------------------------------------------------------
# Helpers: EMA, LR schedule, checkpoints, loss plot

class EMA:
    def __init__(self, modules: dict[str, torch.nn.Module], decay: float):
        self.decay = decay
        self.shadow = {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict[str, torch.nn.Module], step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        floats, targets = [], []
        for name, m in modules.items():
            sh = self.shadow[name]
            for k, v in m.state_dict().items():
                if v.dtype.is_floating_point:
                    floats.append(sh[k])
                    targets.append(v.detach())
                else:
                    sh[k].copy_(v)
        if floats:  # one fused update (a few kernels on a GPU, not two per tensor)
            torch._foreach_mul_(floats, d)
            torch._foreach_add_(floats, targets, alpha=1 - d)

    def copy_to(self, modules: dict[str, torch.nn.Module]) -> None:
        for name, m in modules.items():
            m.load_state_dict(self.shadow[name])


def optimise(opt: torch.optim.Optimizer, loss: torch.Tensor, params, clip: float = 1.0) -> None:
    """One optimizer step on ``loss``: gradients from zero, clipped to norm ``clip``, applied."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def lr_at(step: int, total: int, peak: float, warmup: int = 100, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def save_state(path: Path, state: dict) -> None:
    """A training state (nested dicts and lists of tensors, numbers and strings) as one safetensors file:
    the tensors by their path in the tree, the rest as JSON in the file's metadata. No pickle, so a
    state kept in git can be loaded as safely as the weights. Written whole (temp file, then rename)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}

    def pack(node, where: str):
        if isinstance(node, torch.Tensor):
            tensors[where] = node.detach().cpu().clone()  # safetensors refuses tensors that share memory
            return {"__tensor__": where}
        if isinstance(node, dict):
            return {"__dict__": [[str(k), "int" if isinstance(k, int) else "str", pack(v, f"{where}/{k}")]
                                 for k, v in node.items()]}
        if isinstance(node, (list, tuple)):
            return [pack(v, f"{where}/{i}") for i, v in enumerate(node)]
        return node

    tree = pack(state, "")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"kiri_state": json.dumps(tree)})
    os.replace(tmp, path)


def load_state(path: Path) -> dict:
    """The state ``save_state`` wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tree = json.loads(f.metadata()["kiri_state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}

    def unpack(node):
        if isinstance(node, dict) and "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if isinstance(node, dict):
            return {int(k) if kind == "int" else k: unpack(v) for k, kind, v in node["__dict__"]}
        if isinstance(node, list):
            return [unpack(v) for v in node]
        return node

    return unpack(tree)


def save_ckpt(path: Path, **state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def plot_losses(path: Path, losses: list[float], title: str, evals: list[dict] | None = None) -> None:
    """Loss curve (log scale, smoothed) as a PNG drawn with OpenCV; eval colour/shape/position marks."""
    w, h, m = 800, 450, 60
    img = np.full((h, w, 3), 255, np.uint8)
    if not losses:
        cv2.imwrite(str(path), img)
        return
    y = np.log10(np.maximum(np.asarray(losses, np.float64), 1e-6))
    k = max(1, len(y) // 100)
    sm = np.convolve(y, np.ones(k) / k, mode="valid") if len(y) > k else y
    lo, hi = float(np.percentile(y, 1)), float(np.percentile(y, 99.5))
    hi = max(hi, lo + 1e-3)

    def px(i, v, n):
        return int(m + (w - 2 * m) * i / max(1, n - 1)), int(h - m - (h - 2 * m) * (min(max(v, lo), hi) - lo) / (hi - lo))

    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    raw = np.array([px(i, v, len(y)) for i, v in enumerate(y)], np.int32)
    cv2.polylines(img, [raw], False, (220, 200, 200), 1, cv2.LINE_AA)
    off = (len(y) - len(sm)) // 2
    smp = np.array([px(i + off, v, len(y)) for i, v in enumerate(sm)], np.int32)
    cv2.polylines(img, [smp], False, (200, 60, 20), 2, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, title, (m, 35), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{10 ** hi:.3g}", (5, m + 5), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{10 ** lo:.3g}", (5, h - m), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "0", (m, h - m + 18), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{len(y)} steps (log loss)", (w - m - 150, h - m + 18), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    if evals:
        colours = {"colour": (40, 40, 220), "shape": (40, 160, 40), "position": (200, 120, 0)}
        for key, col in colours.items():
            pts = np.array([(int(m + (w - 2 * m) * e["step"] / max(1, len(y) - 1)), int(h - m - (h - 2 * m) * e[key])) for e in evals], np.int32)
            cv2.polylines(img, [pts], False, col, 1, cv2.LINE_AA)
            for p in pts:
                cv2.circle(img, tuple(int(v) for v in p), 3, col, -1, cv2.LINE_AA)
        cv2.putText(img, "held-out accuracy (0..1):", (m, h - 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for i, (key, col) in enumerate(colours.items()):
            cv2.putText(img, key, (w - m - 240 + 80 * i, h - 20), font, 0.45, col, 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


# Words of the free phrasings that mean the same as a word of the template grammar: a warm start
# gives them that word's embedding, so "center" starts where "centre" is.
def _canonical_words() -> dict[str, str]:
    canon = {alt: word for word, alts in P.SYNONYMS.items() for alt in alts}
    canon.update({plural: canon.get(single, single) for single, plural in P.PLURALS.items()})
    canon.update({"center": "centre", "middle": "centre", "upper": "top", "lower": "bottom", "an": "a"})
    return canon


def warm_start(modules: dict, folder: Path, tok, adapt=None) -> list[str]:
    """Load the weights of a trained pipeline folder (the same architecture) into ``modules``
    ({subfolder name: module}), mapping token embeddings from that folder's tokenizer to ``tok`` by
    token text: tokens both hold keep their embedding, a synonym or plural of a known word takes that
    word's, any other new token keeps its fresh initialisation. A tensor whose shape differs goes
    through ``adapt(key, old, fresh)`` (None: keep the fresh one). Returns the new words so initialised."""
    import json as _json

    from safetensors.torch import load_file

    old_vocab = _json.loads((Path(folder) / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    new_vocab = tok.get_vocab()
    canon = _canonical_words()
    mapped: list[str] = []
    for name, module in modules.items():
        state = load_file(str(Path(folder) / name / "diffusion_pytorch_model.safetensors")) \
            if (Path(folder) / name / "diffusion_pytorch_model.safetensors").exists() \
            else load_file(str(Path(folder) / name / "model.safetensors"))
        own = module.state_dict()
        for key, value in list(state.items()):
            if key not in own:  # portable key names (text_model.*) <-> this transformers version's
                alt = key.removeprefix("text_model.") if key.startswith("text_model.") else f"text_model.{key}"
                if alt in own:
                    state[alt] = state.pop(key)
        emb_key = next((k for k in own if k.endswith("token_embedding.weight")), None)
        if emb_key is not None and emb_key in state:
            old = state[emb_key]
            fresh = own[emb_key].clone()
            for text, i in new_vocab.items():
                src = old_vocab.get(text)
                if src is None and text.endswith("</w>") and text[:-4] in canon:
                    src = old_vocab.get(canon[text[:-4]] + "</w>")
                    if src is not None:
                        mapped.append(text[:-4])
                if src is not None:
                    fresh[i] = old[src]
            state[emb_key] = fresh
        for key in [k for k in state if k in own and state[k].shape != own[k].shape]:
            adapted = adapt(key, state[key], own[key]) if adapt else None
            if adapted is None:
                print(f"warm start: {name}.{key} {tuple(state[key].shape)} -> {tuple(own[key].shape)} starts afresh")
                state[key] = own[key]
            else:
                state[key] = adapted
        missing, unexpected = module.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise SystemExit(f"--init-from {folder}/{name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return sorted(set(mapped))
