#!/usr/bin/env python
"""Train Kiri's embedded default models on a CPU.

    python tools/train_default_models.py vae            # the shared AutoencoderKL (64x64 px <-> 16x16x4)
    python tools/train_default_models.py ldm            # text-to-image LDM (UNet2DConditionModel + CLIP)
    python tools/train_default_models.py dit            # SD3-style MMDiT trained with rectified flow (tools/train_dit.py)
    options: --steps N  --minutes N (stop early, still saves)  --resume  --out FOLDER  --seed N
             --phrasings MIX (caption families, see below)  --init-from FOLDER (warm start)
             --dit-patch 1|2 ... (DiT shape, see below)

The shipped models were made in two stages (models/README.md, "Training"): first on the template
captions only (``--phrasings template --out .train/base/ldm-template``), then on the free phrasings
starting from that model (``--init-from .train/base/ldm-template``; for the DiT also ``--dit-patch 1``).
A warm start maps token embeddings by token text, a synonym starting from its word's embedding.

Everything is drawn by ``tools/kiri_world.py`` from a fixed seed, so a run reproduces the shipped
weights (up to floating-point nondeterminism of the CPU kernels). ``ldm`` and ``dit`` train the VAE
first if ``.train/vae`` is missing. Work files (checkpoints to resume from, cached latents) live in
``.train/``; the finished pipeline goes to ``models/checkpoints/kiri-shapes-{ldm,dit}`` together with
``loss_curve.png`` and ``train_log.json``.

Captions: each step draws, for every picture of the batch, a fresh caption of its scene from the
phrasing families of ``kiri_phrasing.phrase`` (template, bare, partial, reordered, synonyms, noisy),
weighted by ``--phrasings`` (default: kiri_phrasing.DEFAULT_MIX; ``--phrasings template`` trains on the
one template as the models shipped before issue 12 were). The draw is seeded by the step, so
``--resume`` continues with the same captions; a checkpoint made with another mix is refused.
Captions leave attributes out, and the scene shows a random value for each one left out. The
tokenizer in ``.train/tokenizer`` is rebuilt when ``kiri_phrasing.vocabulary()`` has words it does not
hold as single tokens (the free phrasings add 35 words to the template's 30); a rebuilt tokenizer
changes the text encoders' vocabulary, so start such a run without ``--resume``.

DiT options for shape accuracy (defaults = stage 1's architecture; patch 1 measured: no better shapes
at 1,800 steps, see models/README.md):
``--dit-patch 1`` (256 image tokens at 16x16 latents instead of 64: each token sees one latent
pixel, so outlines are not averaged inside a patch; the transformer's forward + backward at batch 64
took 1.5x as long as with patch 2 on the shared 2-core CPU, 8.6 s against 5.7 s under a load of
about 3, so expect roughly 1.5x the time per step),
``--dit-layers N`` / ``--dit-heads N`` (depth, width = heads x 32), ``--dit-logit-mean M`` (centre of
the logit-normal timestep draw: M > 0 spends more steps at high noise, where the layout and the
outline are decided), and a longer schedule with ``--steps``.

On a GPU (DiT): ``--device cuda --workers 8 --batch 512 --budget-minutes N`` trains there, with the
captions, tokens and noise made ahead by spawned worker processes (the same batches as without them),
and the step count fitted to N minutes from the measured pace; ``--curriculum F`` trains on template
captions for the first fraction F of the steps, then on ``--phrasings`` (both stages in one run).
Measured on a lent H200 (models/README.md, the DiT's card): 61 ms a step at batch 512.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # be gentle when the CPU is shared

import argparse
import json
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_phrasing as P  # noqa: E402
from tools import kiri_world as W  # noqa: E402
from tools.training_kit import EMA, lr_at, optimise, plot_losses, save_ckpt, warm_start  # noqa: E402
from tools.ldm_kit import (  # noqa: E402  (what the LDM's training shares with tools/train_dit.py)
    CHECKPOINTS, DIT_DEFAULT, TEXT_DIM, TRAIN_DIR, adherence, batch_captions, cached_latents, check_resume_mix,
    format_mix, free_adherence, free_eval_set, load_tokenizer, load_vae, make_text_encoder, make_vae, save_pipeline,
    to_tensor, to_uint8, tokenize, training_data, training_scenes,
)







# ------------------------------------------------------------------------------------------------
# Data



















# ------------------------------------------------------------------------------------------------
# VAE



def train_vae(args) -> None:
    work = TRAIN_DIR / "vae_work"
    ckpt_path = work / "ckpt.pt"
    torch.manual_seed(args.seed)
    vae = make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr or 2e-3, weight_decay=0.0)
    images, _ = training_data()
    steps = args.steps or 1600
    start, losses, elapsed0 = 0, [], 0.0
    if args.resume and ckpt_path.exists():
        st = torch.load(ckpt_path, weights_only=False)
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        start, losses, elapsed0 = st["step"], st["losses"], st["elapsed"]
        print(f"resumed at step {start}")
    crop, batch = 32, 32
    t0 = time.time()
    last_save = t0
    bar = tqdm(total=steps, initial=start, desc="vae", dynamic_ncols=True)
    vae.train()
    step = start
    for step in range(start, steps):
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        idx = torch.randint(0, len(images), (batch,), generator=g).numpy()
        # Random 32x32 crops on the 4-px latent grid: 4x cheaper than full pictures; the VAE is
        # fully convolutional (no attention) so it carries over to 64x64.
        full = step >= int(steps * 0.85)
        if full:
            x = to_tensor(images[idx[:16]])
        else:
            oy, ox = (torch.randint(0, (64 - crop) // 4 + 1, (2,), generator=g) * 4).tolist()
            x = to_tensor(images[idx, oy: oy + crop, ox: ox + crop])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, args.lr or 2e-3, warmup=50)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        kl = post.kl().mean() / x[0].numel()
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-4 * kl
        optimise(opt, loss, vae.parameters())
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", kl=f"{float(kl):.2f}", full=int(full))
        if args.minutes and elapsed0 + time.time() - t0 > args.minutes * 60:
            step += 1
            break
        if time.time() - last_save > 120:
            save_ckpt(ckpt_path, model=vae.state_dict(), opt=opt.state_dict(), step=step + 1, losses=losses, elapsed=elapsed0 + time.time() - t0)
            last_save = time.time()
    else:
        step = steps
    bar.close()
    elapsed = elapsed0 + time.time() - t0
    save_ckpt(ckpt_path, model=vae.state_dict(), opt=opt.state_dict(), step=step, losses=losses, elapsed=elapsed)
    vae.eval()
    # Latent scale: 1 / std of the latent means over training pictures.
    with torch.no_grad():
        sample = images[:2000]
        z = torch.cat([vae.encode(to_tensor(sample[i: i + 250])).latent_dist.mean for i in range(0, len(sample), 250)])
        sf = float(1.0 / z.std())
        vae.register_to_config(scaling_factor=sf)
        ev_scenes = [W.sample_scene(random.Random(10_000 + i), held_out="any") for i in range(200)]
        ev = np.stack([W.render(s) for s in ev_scenes])
        rec = to_uint8(vae.decode(vae.encode(to_tensor(ev)).latent_dist.mean).sample)
    acc = {k: float(np.mean([W.score(r, s)[k] for r, s in zip(rec, ev_scenes)])) for k in ("colour", "shape", "position", "size")}
    psnr = float(10 * np.log10(255 ** 2 / np.mean((rec.astype(np.float32) - ev.astype(np.float32)) ** 2)))
    out = TRAIN_DIR / "vae"
    vae.save_pretrained(out)
    log = {"steps": step, "seconds": round(elapsed), "scaling_factor": sf, "psnr": psnr, "detector_on_reconstructions": acc}
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    plot_losses(out / "loss_curve.png", losses, f"VAE: {step} steps, {elapsed / 60:.1f} min")
    grid = np.concatenate([np.concatenate(list(ev[:8]), 1), np.concatenate(list(rec[:8]), 1)], 0)
    cv2.imwrite(str(out / "reconstructions.png"), cv2.resize(grid[..., ::-1], None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST))
    print(json.dumps(log))






# ------------------------------------------------------------------------------------------------
# Text encoders



# ------------------------------------------------------------------------------------------------
# LDM

def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        # Three levels (16, 8, 4): at 4x4 every cell is next to a border, which is how a UNet, having no
        # position embedding, can tell "left" from "right" (two levels learnt colours but not places).
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 96),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn", layers_per_block=1, cross_attention_dim=TEXT_DIM,
        attention_head_dim=4, norm_num_groups=16,
    )


def ldm_schedulers():
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

    train = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type="epsilon", clip_sample=False, steps_offset=1)
    sample = DPMSolverMultistepScheduler.from_config(train.config, algorithm_type="dpmsolver++", solver_order=2)
    return train, sample


@torch.no_grad()
def sample_ldm(unet, text_encoder, vae, tok, prompts, steps=10, cfg=5.0, seed=0):
    from diffusers import DPMSolverMultistepScheduler

    _, sched = ldm_schedulers()
    sched = DPMSolverMultistepScheduler.from_config(sched.config)
    sched.set_timesteps(steps)
    cond = text_encoder(tokenize(tok, prompts)).last_hidden_state
    unc = text_encoder(tokenize(tok, [""] * len(prompts))).last_hidden_state
    ctx = torch.cat([unc, cond])
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((len(prompts), 4, 16, 16), generator=g) * sched.init_noise_sigma
    for t in sched.timesteps:
        xi = sched.scale_model_input(torch.cat([x, x]), t)
        e_u, e_c = unet(xi, t, ctx).sample.chunk(2)
        x = sched.step(e_u + cfg * (e_c - e_u), t, x).prev_sample
    return to_uint8(vae.decode(x / vae.config.scaling_factor).sample)






def train_ldm(args) -> None:
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(args.seed)
    vae = load_vae()
    tok = load_tokenizer()
    lat = cached_latents(vae)
    scenes = training_scenes()
    empty = tokenize(tok, [""])[0]
    text_encoder = make_text_encoder(tok)
    unet = make_unet()
    modules = {"unet": unet, "text_encoder": text_encoder}
    if args.init_from and not args.resume:
        words = warm_start(modules, Path(args.init_from), tok)
        print(f"warm start from {args.init_from}; new words starting from a synonym's embedding: {', '.join(words)}")
    params = list(unet.parameters()) + list(text_encoder.parameters())
    peak = args.lr or (5e-4 if args.init_from else 1e-3)
    opt = torch.optim.AdamW(params, lr=peak, weight_decay=0.01)
    ema = EMA(modules, decay=0.998)
    noise_sched, _ = ldm_schedulers()
    acp = noise_sched.alphas_cumprod
    steps, batch = args.steps or 4000, args.batch or 64
    work = TRAIN_DIR / "ldm_work"
    ckpt_path = work / "ckpt.pt"
    start, losses, evals, elapsed0 = 0, [], [], 0.0
    if args.resume and ckpt_path.exists():
        st = torch.load(ckpt_path, weights_only=False)
        for name, m in modules.items():
            m.load_state_dict(st[name])
        check_resume_mix(st, args.phrasings)
        ema.shadow = st["ema"]
        opt.load_state_dict(st["opt"])
        start, losses, evals, elapsed0 = st["step"], st["losses"], st["evals"], st["elapsed"]
        print(f"resumed at step {start}")
    eval_scenes = W.eval_prompts(24, seed=99)
    eval_caps = [s.caption for s in eval_scenes]
    free_eval = free_eval_set(args.eval_phrasings) if args.eval_phrasings else []

    def checkpoint(step_done: int) -> None:
        save_ckpt(ckpt_path, unet=unet.state_dict(), text_encoder=text_encoder.state_dict(), ema=ema.shadow,
                  opt=opt.state_dict(), step=step_done, losses=losses, evals=evals, elapsed=elapsed0 + time.time() - t0,
                  phrasings=args.phrasings)

    def evaluate(step_done: int) -> dict:
        eu, et = make_unet(), make_text_encoder(tok)
        ema.copy_to({"unet": eu, "text_encoder": et})
        imgs = sample_ldm(eu.eval(), et.eval(), vae, tok, eval_caps, steps=10, cfg=5.0, seed=0)
        res = {"step": step_done, "minutes": round((elapsed0 + time.time() - t0) / 60, 1), **adherence(imgs, eval_scenes)}
        if free_eval:
            res.update(free_adherence(sample_ldm(eu.eval(), et.eval(), vae, tok, [c for c, _ in free_eval], steps=10, cfg=5.0, seed=0), free_eval))
        evals.append(res)
        tqdm.write(f"eval @ {step_done}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items() if k not in ("step", "minutes")))
        return res

    t0 = time.time()
    last_save = t0
    unet.train()
    text_encoder.train()
    bar = tqdm(total=steps, initial=start, desc="ldm", dynamic_ncols=True)
    step = start
    for step in range(start, steps):
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        idx = torch.randint(0, len(lat), (batch,), generator=g)
        x0 = lat[idx]
        c = tokenize(tok, batch_captions(scenes, idx, step, args.seed, args.phrasings))
        c[torch.rand(batch, generator=g) < 0.1] = empty  # text dropout: unconditional for CFG
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        xt = noise_sched.add_noise(x0, noise, t)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, peak)
        ctx = text_encoder(c).last_hidden_state
        pred = unet(xt, t, ctx).sample
        snr = acp[t] / (1 - acp[t])
        weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 weighting (epsilon prediction)
        loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        optimise(opt, loss, params)
        ema.update(modules, step)
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        done = step + 1
        if args.eval_every and done % args.eval_every == 0 and done < steps:
            evaluate(done)
        if time.time() - last_save > 180:
            checkpoint(done)
            last_save = time.time()
        if args.minutes and elapsed0 + time.time() - t0 > args.minutes * 60:
            tqdm.write(f"time limit reached at step {done}")
            break
    done = step + 1 if steps > start else start
    bar.close()
    final = evaluate(done)
    checkpoint(done)
    elapsed = elapsed0 + time.time() - t0

    # The shipped weights are the EMA weights.
    ema.copy_to(modules)
    _, sched = ldm_schedulers()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder.eval(), tokenizer=tok, unet=unet.eval(), scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    out = Path(args.out) if args.out else CHECKPOINTS / "kiri-shapes-ldm"
    save_pipeline(pipe, out, tok)
    log = {"model": "kiri-shapes-ldm", "steps": done, "batch": batch, "seconds": round(elapsed), "final_loss_avg50": float(np.mean(losses[-50:])),
           "unet_params": sum(p.numel() for p in unet.parameters()), "text_encoder_params": sum(p.numel() for p in text_encoder.parameters()),
           "vae_params": sum(p.numel() for p in vae.parameters()), "evals": evals, "final_eval": final,
           "command": "python tools/train_default_models.py ldm" + (f" --steps {steps}" if args.steps else "")
           + (f" --init-from {args.init_from}" if args.init_from else "")}
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    plot_losses(out / "loss_curve.png", losses, f"kiri-shapes-ldm: {done} steps, {elapsed / 60:.1f} min (min-SNR eps loss)", evals)
    print(json.dumps({k: v for k, v in log.items() if k != "evals"}))




# ------------------------------------------------------------------------------------------------
# DiT: the architecture's defaults (the training is tools/train_dit.py)



# ------------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["vae", "ldm", "dit"])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: vae 1600, ldm 4000, dit 2400; the shipped models used vae 1400, ldm 4000, dit 2400)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time, and save")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in .train/")
    p.add_argument("--out", default=None, help="output folder (default models/checkpoints/kiri-shapes-ldm|dit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", default=None, metavar="FOLDER",
                   help="start from a trained pipeline folder of the same architecture (e.g. the template-only model) "
                        "instead of random weights; new caption words start from their synonym's embedding")
    p.add_argument("--eval-every", type=int, default=300, help="held-out adherence check every N steps (0: off)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="where the DiT trains: cpu (the budgeted runs) or cuda (a GPU, when one is lent)")
    p.add_argument("--workers", type=int, default=0, help="DiT: processes making the batches (captions, tokens, noise) ahead of the "
                   "training step; 0 on a 2-core CPU, a few beside a GPU")
    p.add_argument("--budget-minutes", type=float, default=None, help="DiT: fit the run to this many minutes: after 220 steps "
                   "the step count is set from the measured pace (--steps then caps it), so the learning rate and the "
                   "curriculum end in time")
    p.add_argument("--curriculum", type=float, default=0.0, help="DiT: train on template captions for this fraction of the "
                   "steps, then on --phrasings (both stages of the shipped models in one run; 0: off)")
    p.add_argument("--phrasings", default=format_mix(P.DEFAULT_MIX), type=P.parse_mix,
                   help=f"caption families and their weights, e.g. 'template=0.5,bare=0.5' ('template' alone: the "
                        f"one-template captions of the models shipped before issue 12; families: {', '.join(P.FAMILIES)}; "
                        f"default %(default)s)")
    p.add_argument("--eval-phrasings", default="bare,noisy", type=lambda s: [f.strip() for f in s.split(",") if f.strip()],
                   help="also measure these families' held-out phrasings at each adherence check (free_colour, "
                        "free_shape, free_position in train_log.json; '' to skip)")
    p.add_argument("--dit-patch", type=int, choices=[1, 2], default=DIT_DEFAULT["patch"],
                   help="DiT patch size: 2 = 64 image tokens (stage 1), 1 = 256 tokens (the shipped stage 2; with --init-from a patch-2 model, warm-started across patch sizes)")
    p.add_argument("--dit-layers", type=int, default=DIT_DEFAULT["layers"], help="DiT joint blocks (shipped 4)")
    p.add_argument("--dit-heads", type=int, default=DIT_DEFAULT["heads"], help="DiT heads of 32 (shipped 3 = 96 wide)")
    p.add_argument("--dit-time", choices=["logit-normal", "uniform"], default="logit-normal",
                   help="the DiT's training timestep draw (shipped logit-normal, as SD3)")
    p.add_argument("--dit-logit-mean", type=float, default=0.0,
                   help="centre of the DiT's logit-normal timestep draw (shipped 0; > 0 favours high noise, where layout and outline form)")
    p.add_argument("--dit-weighting", choices=["none", "min-snr", "low-noise"], default="none",
                   help="the DiT's loss weights over time (tools/dit_recipe.py; shipped none)")
    p.add_argument("--repa-weight", type=float, default=0.0,
                   help="REPA: weight of aligning a DiT block's tokens with the frozen LDM's features (0: off, as shipped)")
    p.add_argument("--repa-block", type=int, default=1, help="REPA: the DiT block whose tokens are aligned")
    p.add_argument("--repa-layer", default="down1", help="REPA: the LDM UNet's features: down0, down1, ... or mid")
    p.add_argument("--stop-at", type=int, default=None, help="DiT: end this chunk after this step (save; --resume goes on)")
    p.add_argument("--chunk-minutes", type=float, default=None,
                   help="DiT: end this chunk after this many minutes (--minutes counts the whole run's)")
    p.add_argument("--compact-state", action="store_true",
                   help="DiT: a checkpoint of 60%% the size (bf16 EMA difference and Adam moments), for a run's state "
                        "kept in git between chunks (tools/dit_run/)")
    p.add_argument("--dit-work", default=None, help="the DiT's checkpoint folder (default .train/dit_work), so "
                                                     "short comparison runs do not share one")
    return p


def main(argv=None) -> None:
    p = parser()
    args = p.parse_args(argv)
    for f in args.eval_phrasings:
        if f not in P.FAMILIES:
            p.error(f"--eval-phrasings: unknown family {f!r}")
    torch.set_num_threads(args.threads)
    TRAIN_DIR.mkdir(parents=True, exist_ok=True)
    if args.model == "vae":
        train_vae(args)
        return
    if not (TRAIN_DIR / "vae" / "config.json").exists():
        train_vae(argparse.Namespace(**{**vars(args), "steps": None, "lr": None, "resume": True}))
    if args.model == "ldm":
        train_ldm(args)
    else:
        from tools.train_dit import train_dit

        train_dit(args)




if __name__ == "__main__":
    main()
