"""The DiT of Kiri's default models (``kiri-shapes-dit``): an SD3-style MMDiT trained with rectified
flow, on the CPU or, when one is lent, on a GPU. Run it through ``python tools/train_default_models.py
dit`` (options there); the data, the VAE, the tokenizer, the text encoders and the export are
tools/ldm_kit.py's, shared with the LDM.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tools import kiri_world as W
from tools.ldm_kit import (
    CHECKPOINTS, DIT_DEFAULT, TEXT_DIM, TRAIN_DIR, adherence, batch_captions, cached_latents, check_resume_mix,
    free_adherence, free_eval_set, load_tokenizer, load_vae, make_text_encoder, save_pipeline, to_uint8, tokenize,
    training_scenes,
)
from tools.dit_recipe import Repa, flow_weights, load_ldm_features
from tools.training_kit import EMA, load_state, lr_at, optimise, plot_losses, save_state, warm_start


T5_TOKENS = 256  # StableDiffusion3Pipeline pads the prompt with this many zero "T5" tokens (max_sequence_length)


class DedupJointAttnProcessor:
    """JointAttnProcessor2_0 where the last context token stands for ``copies`` identical ones.

    Without a T5 encoder the SD3 pipeline appends 256 all-zero tokens to the prompt. They stay
    identical through every block (no positional embedding on text), so attending to 256 copies is
    exactly attending to one copy whose logit is raised by log(256). Training with one copy is the
    same function at a fraction of the cost."""

    def __init__(self, copies: int = T5_TOKENS):
        self.log_copies = math.log(copies)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        b = hidden_states.shape[0]
        n_img = hidden_states.shape[1]

        def heads(x):
            return x.view(b, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        q = heads(attn.to_q(hidden_states))
        k = heads(attn.to_k(hidden_states))
        v = heads(attn.to_v(hidden_states))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        eq = heads(attn.add_q_proj(encoder_hidden_states))
        ek = heads(attn.add_k_proj(encoder_hidden_states))
        ev = heads(attn.add_v_proj(encoder_hidden_states))
        if attn.norm_added_q is not None:
            eq = attn.norm_added_q(eq)
        if attn.norm_added_k is not None:
            ek = attn.norm_added_k(ek)
        q, k, v = torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2)
        bias = torch.zeros(k.shape[2], dtype=q.dtype, device=q.device)
        bias[-1] = self.log_copies
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.view(1, 1, 1, -1))
        out = out.transpose(1, 2).reshape(b, -1, attn.heads * q.shape[-1])
        hs, enc = out[:, :n_img], out[:, n_img:]
        if not attn.context_pre_only:
            enc = attn.to_add_out(enc)
        hs = attn.to_out[1](attn.to_out[0](hs))
        return hs, enc




def make_dit(patch: int = 2, layers: int = 4, heads: int = 3):
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=16, patch_size=patch, in_channels=4, out_channels=4, num_layers=layers, attention_head_dim=32,
        num_attention_heads=heads, joint_attention_dim=2 * TEXT_DIM, caption_projection_dim=32 * heads,
        pooled_projection_dim=2 * TEXT_DIM, pos_embed_max_size=32 // patch,  # up to 32x32 latents = 128 px
    )


def adapt_dit_patch(key: str, old: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor | None:
    """Warm start of a patch-1 DiT from a patch-2 one: the patch embedding sums the 2x2 kernel (a
    1-pixel token embeds as a 2x2 block of that pixel did) and the output layer averages the four
    sub-pixels of each channel (SD3 unpatchifies features as (p, p, channels)). The position table
    is recomputed for the finer grid, so places are learnt again."""
    if key == "pos_embed.proj.weight" and old.shape[2:] == (2, 2) and fresh.shape[2:] == (1, 1):
        return old.sum(dim=(2, 3), keepdim=True)
    if key in ("proj_out.weight", "proj_out.bias") and old.shape[0] == 4 * fresh.shape[0]:
        channels = fresh.shape[0]
        return old.reshape(4, channels, *old.shape[1:]).mean(dim=0)
    return None


def dit_arch(args) -> dict:
    return {"patch": args.dit_patch, "layers": args.dit_layers, "heads": args.dit_heads}


def dit_text(te1, te2, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt embeds as StableDiffusion3Pipeline builds them (penultimate CLIP layers side by side,
    pooled projections side by side), with one zero token standing for the 256 T5 zeros."""
    o1 = te1(ids, output_hidden_states=True)
    o2 = te2(ids, output_hidden_states=True)
    emb = torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], -1)
    pooled = torch.cat([o1.text_embeds, o2.text_embeds], -1)
    emb = torch.cat([emb, emb.new_zeros(emb.shape[0], 1, emb.shape[2])], 1)
    return emb, pooled


@torch.no_grad()
def sample_dit(dit, te1, te2, vae, tok, prompts, steps=10, cfg=5.0, seed=0):
    emb, pooled = dit_text(te1, te2, tokenize(tok, prompts))
    uemb, upooled = dit_text(te1, te2, tokenize(tok, [""] * len(prompts)))
    ctx, pool = torch.cat([uemb, emb]), torch.cat([upooled, pooled])
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((len(prompts), 4, 16, 16), generator=g)
    sig = torch.linspace(1.0, 0.0, steps + 1)
    for i in range(steps):
        t = torch.full((2 * len(prompts),), float(sig[i]) * 1000)
        vu, vc = dit(torch.cat([x, x]), ctx, pool, t).sample.chunk(2)
        x = x + (sig[i + 1] - sig[i]) * (vu + cfg * (vc - vu))
    return to_uint8(vae.decode(x / vae.config.scaling_factor).sample)


_BATCHES: dict = {}  # what dit_batch needs, set before worker processes fork


def dit_batch(step: int, mix: dict[str, float]) -> tuple[torch.Tensor, ...]:
    """Step ``step``'s batch: picture indices, caption tokens (10% empty), noise and timesteps, each
    drawn from generators seeded by the step, so a resumed run, or one whose batches are made by
    worker processes (``--workers``), trains on the same data."""
    b = _BATCHES
    g = torch.Generator().manual_seed(b["seed"] * 1_000_003 + step)
    idx = torch.randint(0, b["n"], (b["batch"],), generator=g)
    c = b["tokenize"](batch_captions(b["scenes"], idx, step, b["seed"], mix))
    c[torch.rand(b["batch"], generator=g) < 0.1] = b["empty"]
    noise = torch.randn((b["batch"], *b["shape"]), generator=g)
    if b["time"] == "uniform":  # as the LDM's DDPM steps: the low-noise end, where outlines sharpen, as often as the rest
        t = torch.rand(b["batch"], generator=g)
    else:
        t = torch.sigmoid(torch.randn(b["batch"], generator=g) + b["logit_mean"])  # logit-normal(mean, 1)
    return idx, c, noise, t


def _init_batch_worker(state: dict) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(1)
    _BATCHES.update(state)


class BatchSource:
    """Batches for the coming steps, made ``depth`` steps ahead by ``workers`` processes (0: made in
    the training process when asked). The caption mix is fixed when a step is handed out. Workers
    are spawned, not forked: a fork of a process that has started CUDA (and its threads) hung on a
    GPU machine before making one batch. A worker that does not answer within ``patience`` seconds
    is given up, and the batches are made in the training process from then on."""

    def __init__(self, workers: int, depth: int = 12, patience: float = 45.0):
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing

        self.pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_batch_worker, initargs=(dict(_BATCHES),)) if workers else None)
        self.depth, self.pending, self.patience = depth, {}, patience

    def get(self, step: int, mix_for) -> tuple[torch.Tensor, ...]:
        if self.pool is not None:
            for ahead in range(step, step + self.depth):
                if ahead not in self.pending:
                    self.pending[ahead] = self.pool.submit(dit_batch, ahead, mix_for(ahead))
            try:
                return self.pending.pop(step).result(timeout=self.patience)
            except Exception as exc:  # noqa: BLE001 - a stuck or broken worker: carry on without them
                tqdm.write(f"batch workers gave up at step {step} ({type(exc).__name__}); making batches here")
                self.close()
        return dit_batch(step, mix_for(step))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool, self.pending = None, {}


TEMPLATE_ONLY = {"template": 1.0}


def chunk_state(weights: dict, ema: dict, opt: dict, compact: bool = False) -> dict:
    """The EMA and optimizer part of a chunk's checkpoint. ``compact`` (for a state kept in git between
    chunks) stores the EMA as its bf16 difference from the weights and Adam's moments in bf16: 60% of
    the full size, at a relative error of about 0.4% on each, once a chunk; the weights stay fp32."""
    if not compact:
        return {"ema": ema, "opt": opt}
    delta = {n: {k: (v - weights[n][k]).to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}
             for n, sd in ema.items()}
    state = {i: {k: v.to(torch.bfloat16) if k.startswith("exp_avg") else v for k, v in s.items()}
             for i, s in opt["state"].items()}
    return {"ema_delta": delta, "opt": {**opt, "state": state}}


def ema_of(st: dict) -> dict:
    """The EMA weights of a checkpoint, full or compact (``chunk_state``)."""
    if "ema" in st:
        return st["ema"]
    return {n: {k: st[n][k] + v.float() if v.is_floating_point() else v for k, v in sd.items()}
            for n, sd in st["ema_delta"].items()}


@dataclass
class DitData:
    """What the DiT trains on: the frozen VAE, the tokenizer, the training pictures' latents and their
    scenes (for the captions). ``load_data`` gives Kiri's world; a test passes tiny ones."""

    vae: object
    tok: object
    latents: torch.Tensor
    scenes: list


def load_data(device: str = "cpu") -> DitData:
    vae = load_vae()
    return DitData(vae=vae, tok=load_tokenizer(), latents=cached_latents(vae, device), scenes=training_scenes())


def train_dit(args, data: DitData | None = None) -> dict:
    """Train (or go on training) the DiT; one call is one chunk of the run. A chunk ends at the run's
    last step, at ``--stop-at`` or after ``--chunk-minutes`` (``--minutes`` counts the whole run's
    time), and leaves the checkpoint the next chunk resumes from: weights, EMA, optimizer state, step,
    losses and checks, in ``--dit-work``. Returns the run's log (also written to the export folder)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    from diffusers.models.attention_processor import JointAttnProcessor2_0

    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    data = data or load_data(args.device)
    vae, tok, lat, scenes = data.vae, data.tok, data.latents, data.scenes
    empty = tokenize(tok, [""])[0]
    steps, batch = args.steps or 2400, args.batch or 64
    _BATCHES.update(seed=args.seed, n=len(lat), batch=batch, scenes=scenes, tokenize=partial(tokenize, tok), empty=empty,
                    shape=tuple(lat.shape[1:]), time=args.dit_time, logit_mean=args.dit_logit_mean)
    source = BatchSource(args.workers)
    lat = lat.to(dev)
    te1, te2 = make_text_encoder(tok, with_projection=True), make_text_encoder(tok, with_projection=True)
    arch = dit_arch(args)
    dit = make_dit(**arch)
    dit.set_attn_processor(DedupJointAttnProcessor())
    modules = {"transformer": dit, "text_encoder": te1, "text_encoder_2": te2}
    ckpt_path = Path(getattr(args, "dit_work", None) or TRAIN_DIR / "dit_work") / "state.safetensors"
    resuming = bool(args.resume and ckpt_path.exists())
    if args.init_from and not resuming:  # a run's first chunk starts from that model, the later ones from their state
        words = warm_start(modules, Path(args.init_from), tok, adapt=adapt_dit_patch)
        print(f"warm start from {args.init_from}; new words starting from a synonym's embedding: {', '.join(words)}")
    for m in modules.values():
        m.to(dev)
    params = [p for m in modules.values() for p in m.parameters()]
    weighting, repa_weight = getattr(args, "dit_weighting", "none"), getattr(args, "repa_weight", 0.0)
    repa = features = None
    if repa_weight:  # the tokens after one block aligned with the frozen LDM's features (tools/dit_recipe.py)
        features = load_ldm_features(CHECKPOINTS / "kiri-shapes-ldm", args.repa_layer, args.device)
        repa = Repa(dit, args.repa_block, features.channels).to(dev)
        params += list(repa.parameters())
    grid = lat.shape[-1] // arch["patch"]
    recipe = {"weighting": weighting, "repa_weight": repa_weight,
              **({"repa_block": args.repa_block, "repa_layer": args.repa_layer} if repa_weight else {})}
    peak = args.lr or (5e-4 if args.init_from else 1e-3)
    opt = torch.optim.AdamW(params, lr=peak, weight_decay=0.01)
    ema = EMA(modules, decay=0.998)
    compact = bool(getattr(args, "compact_state", False))
    start, losses, evals, elapsed0 = 0, [], [], 0.0
    if resuming:
        st = load_state(ckpt_path)  # safetensors: no pickle
        if st.get("arch", DIT_DEFAULT) != arch:
            raise SystemExit(f"the checkpoint is a DiT with {st.get('arch', DIT_DEFAULT)}, not {arch}: pass the same --dit-* options")
        for name, m in modules.items():
            m.load_state_dict(st[name])
        check_resume_mix(st, args.phrasings)
        if st.get("curriculum", 0.0) != args.curriculum:
            raise SystemExit(f"the checkpoint was trained with --curriculum {st.get('curriculum', 0.0)}, not {args.curriculum}")
        if st.get("recipe", {"weighting": "none", "repa_weight": 0.0}) != recipe:
            raise SystemExit(f"the checkpoint was trained with the recipe {st.get('recipe')}, not {recipe}: pass the same "
                             "--dit-weighting and --repa-* options")
        if repa is not None:
            repa.load_state_dict(st["repa"])
        ema.shadow = {n: {k: v.to(dev) for k, v in sd.items()} for n, sd in ema_of(st).items()}
        opt.load_state_dict(st["opt"])  # torch casts the moments back to the parameters' dtype
        start, losses, evals, elapsed0 = st["step"], st["losses"], st["evals"], st["elapsed"]
        steps = st.get("steps", steps) if args.budget_minutes else steps
        print(f"resumed at step {start} of {steps} ({elapsed0 / 60:.1f} minutes of training so far)")
    eval_scenes = W.eval_prompts(24, seed=99)
    eval_caps = [s.caption for s in eval_scenes]
    free_eval = free_eval_set(args.eval_phrasings) if args.eval_phrasings else []

    def mix_for(step: int) -> dict[str, float]:
        """The curriculum: template captions for the first part of the run, then the free phrasings."""
        return TEMPLATE_ONLY if step < args.curriculum * steps else args.phrasings

    def checkpoint(step_done: int) -> None:
        weights = {n: m.state_dict() for n, m in modules.items()}
        save_state(ckpt_path, dict(**weights, **chunk_state(weights, ema.shadow, opt.state_dict(), compact),
                  step=step_done, steps=steps, losses=losses, evals=evals, elapsed=elapsed0 + time.time() - t0,
                  phrasings=args.phrasings, curriculum=args.curriculum, arch=arch, logit_mean=args.dit_logit_mean,
                  time=args.dit_time, recipe=recipe, **({"repa": repa.state_dict()} if repa is not None else {})))

    def evaluate(step_done: int) -> dict:
        ed, e1, e2 = make_dit(**arch), make_text_encoder(tok, True), make_text_encoder(tok, True)
        ed.set_attn_processor(DedupJointAttnProcessor())
        ema.copy_to({"transformer": ed, "text_encoder": e1, "text_encoder_2": e2})
        imgs = sample_dit(ed.eval(), e1.eval(), e2.eval(), vae, tok, eval_caps, steps=10, cfg=5.0, seed=0)
        res = {"step": step_done, "minutes": round((elapsed0 + time.time() - t0) / 60, 1), **adherence(imgs, eval_scenes)}
        if free_eval:
            res.update(free_adherence(sample_dit(ed.eval(), e1.eval(), e2.eval(), vae, tok, [c for c, _ in free_eval], steps=10, cfg=5.0, seed=0), free_eval))
        evals.append(res)
        tqdm.write(f"eval @ {step_done}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items() if k not in ("step", "minutes")))
        return res

    t0 = time.time()
    last_save = t0
    stop_at = getattr(args, "stop_at", None)  # this chunk's last step (the run's, unless given)
    chunk_minutes = getattr(args, "chunk_minutes", None)
    for m in modules.values():
        m.train()
    ends = [e for e in (stop_at and f"step {stop_at}", chunk_minutes and f"{chunk_minutes:g} minutes") if e]
    print(f"this chunk: from step {start} of {steps}" + (f", until {' or '.join(ends)}" if ends else ""))
    bar = tqdm(total=steps, initial=start, desc="dit", dynamic_ncols=True)  # its ETA is the run's end
    pending: list[torch.Tensor] = []  # losses still on the device: read in groups, so the GPU is not waited on each step

    def flush_losses() -> None:
        if pending:
            losses.extend(torch.stack(pending).float().cpu().tolist())
            pending.clear()
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{opt.param_groups[0]['lr']:.1e}")

    timed_from = None
    step = start
    while step < (min(steps, stop_at) if stop_at else steps):
        idx, c, noise, t = source.get(step, mix_for)
        x0 = lat[idx.to(dev)]
        c, noise, t = c.to(dev), noise.to(dev), t.to(dev)
        tt = t.view(-1, 1, 1, 1)
        xt = (1 - tt) * x0 + tt * noise  # sigma = t, as FlowMatchEulerDiscreteScheduler
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, peak)
        emb, pooled = dit_text(te1, te2, c)
        pred = dit(xt, emb, pooled, t * 1000).sample
        if weighting == "none":
            loss = F.mse_loss(pred, noise - x0)
        else:
            loss = (flow_weights(t, weighting) * (pred - (noise - x0)).pow(2).mean(dim=(1, 2, 3))).mean()
        if repa is not None:
            loss = loss + repa_weight * repa.loss(features(x0, grid))
        optimise(opt, loss, params)
        ema.update(modules, step)
        pending.append(loss.detach())
        bar.update(1)
        step += 1
        if step % 50 == 0:
            flush_losses()
        if args.budget_minutes and step == start + 20:
            timed_from = (step, time.time())
        if args.budget_minutes and timed_from and step == timed_from[0] + 200:
            # Fit the schedule (learning-rate decay, curriculum) to the time left, from the measured pace.
            per_step = (time.time() - timed_from[1]) / 200
            left = args.budget_minutes * 60 - (elapsed0 + time.time() - t0)
            fitted = step + max(0, int(0.95 * left / per_step))
            steps = min(args.steps or fitted, fitted)
            bar.total = steps
            tqdm.write(f"{per_step * 1000:.0f} ms a step: {steps} steps fit --budget-minutes {args.budget_minutes:g}")
        if args.eval_every and step % args.eval_every == 0 and step < steps:
            flush_losses()
            evaluate(step)
        if time.time() - last_save > 180:
            flush_losses()
            checkpoint(step)
            last_save = time.time()
        if args.minutes and elapsed0 + time.time() - t0 > args.minutes * 60:
            tqdm.write(f"time limit reached at step {step}")
            break
        if chunk_minutes and time.time() - t0 > chunk_minutes * 60:
            tqdm.write(f"this chunk's {chunk_minutes:g} minutes are up at step {step} of {steps}: "
                       f"go on with --resume and the same options")
            break
    source.close()
    flush_losses()
    done = step
    bar.close()
    final = evals[-1] if evals and evals[-1]["step"] == done else evaluate(done)  # a check at the chunk's last step is kept
    checkpoint(done)
    elapsed = elapsed0 + time.time() - t0

    ema.copy_to(modules)
    for m in modules.values():
        m.to("cpu")
    dit.set_attn_processor(JointAttnProcessor2_0())
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    pipe = StableDiffusion3Pipeline(transformer=dit.eval(), scheduler=sched, vae=vae, text_encoder=te1.eval(), tokenizer=tok,
                                    text_encoder_2=te2.eval(), tokenizer_2=tok, text_encoder_3=None, tokenizer_3=None)
    out = Path(args.out) if args.out else CHECKPOINTS / "kiri-shapes-dit"
    save_pipeline(pipe, out, tok)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {args.threads} threads"
    log = {"model": "kiri-shapes-dit", "steps": done, "batch": batch, "recipe": recipe, "seconds": round(elapsed), "device": device_name,
           "final_loss_avg50": float(np.mean(losses[-50:])),
           "transformer_params": sum(p.numel() for p in dit.parameters()),
           "text_encoder_params": sum(p.numel() for p in te1.parameters()) * 2, "evals": evals, "final_eval": final,
           "command": "python tools/train_default_models.py " + (" ".join(sys.argv[1:]) or "dit")}
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    plot_losses(out / "loss_curve.png", losses, f"kiri-shapes-dit: {done} steps, {elapsed / 60:.1f} min on {device_name} (flow-matching loss)", evals)
    print(json.dumps({k: v for k, v in log.items() if k != "evals"}))
    return log
