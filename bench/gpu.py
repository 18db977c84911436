"""GPU benchmark: Kiri's engine against a plain diffusers script, in one run on one card.

Run on a CUDA machine (nothing is downloaded):
    python bench/gpu.py                         # SD 1.5 at 512 px, SDXL and SD3 Medium at 1024 px, 20 steps
    python bench/gpu.py --models sd15,sdxl,sd3,flux --steps 28 --runs 5 --json gpu.json
It builds each real architecture (bench/configs/architectures.py) with random weights in the card's
half dtype (fp16; bf16 for SD3/Flux where the card has it), saves it as a diffusers folder under
--work-dir, and times for each model:
- diffusers: the usual hand-written baseline, `Pipeline.from_pretrained(folder, torch_dtype=...)
  .to("cuda")` and `pipe(prompt, num_inference_steps=..., height=..., width=...)`: fp16/bf16 with
  diffusers' default SDPA attention, nothing else;
- kiri: Kiri's engine (`engine.txt2img`) on the same folder with its default fast path;
- kiri compiled: the same with --compile (regional torch.compile of the repeated blocks);
- kiri + step cache: the default fast path with the family's step cache (--step-cache to choose).
Each row: seconds per image (median of --runs after a warm-up image), it/s (steps / s per image, so
the text encoders and the VAE decode count too), the speed against diffusers, the peak VRAM of the
timed images, and the time to first image (from loading the folder to the first picture, compile
included). TF32 is put back to PyTorch's defaults before each diffusers run (Kiri's fast path turns it
on process-wide).

Without a GPU it runs the default models (models/checkpoints: kiri-shapes-ldm, kiri-shapes-dit) on the
CPU at --size (64) the same way (no compiled row: the fast path is CUDA-only).
`--dry-run` builds shrunk versions of the GPU architectures and runs the GPU path on the CPU in fp32,
to check the script itself.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PROMPT = "a photo of a red fox in the snow, detailed fur, morning light"
CPU_MODELS = ("kiri-shapes-ldm", "kiri-shapes-dit")
# The step cache each family gets in the cached row (README "Step cache": what keeps the picture on
# a UNet; First Block Cache on the transformers). With random weights a threshold method's skips say
# little about a trained model's; PAB and TaylorSeer skip on a fixed schedule.
STEP_CACHE = {"sd1": "pyramid_attention_broadcast 2", "sd2": "pyramid_attention_broadcast 2",
              "sdxl": "pyramid_attention_broadcast 2", "sd3": "taylorseer 2", "flux": "taylorseer 2", "pixart": "taylorseer 2"}


@dataclass
class Row:
    model: str
    mode: str
    s_per_image: float = 0.0
    it_s: float = 0.0
    speedup: float = 1.0
    peak_vram_gb: float = 0.0
    first_image_s: float = 0.0
    note: str = ""
    extra: dict = field(default_factory=dict)


# --- building the architectures --------------------------------------------------------------------

def _t5_tokenizer():
    """A small unigram T5 tokenizer built in memory (Flux's pipeline needs one; no hub)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -3.0) for w in PROMPT.replace(",", " ").split()]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.!?"]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _tame_init(module) -> None:
    """Small random weights (std 0.02, zero biases): activations stay finite through every block in half
    precision, so both pipelines make (meaningless) finite pictures and Kiri's NaN check passes."""
    import torch

    with torch.no_grad():
        for m in module.modules():
            weight = getattr(m, "weight", None)
            if isinstance(weight, torch.nn.Parameter) and weight.dim() >= 2:
                weight.normal_(0.0, 0.02)
            bias = getattr(m, "bias", None)
            if isinstance(bias, torch.nn.Parameter) and weight is not None and getattr(weight, "dim", lambda: 0)() >= 2:
                bias.zero_()


def build_folder(arch: dict, folder: Path, dtype, device: str) -> Path:
    """The architecture as a diffusers folder with random weights in `dtype`, made on `device` (a 12B
    transformer initialises in seconds on the card, in minutes on the CPU)."""
    import diffusers
    import torch
    import transformers
    from transformers import CLIPTokenizer

    # Kiri's small CLIP tokenizer (its ids fit any CLIP vocabulary), at the real models' 77 tokens
    clip_tokenizer = CLIPTokenizer.from_pretrained(str(ROOT / "models" / "checkpoints" / "kiri-shapes-ldm" / "tokenizer"),
                                                   model_max_length=77)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    parts: dict = {}
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            if "unet" in arch:
                parts["unet"] = diffusers.UNet2DConditionModel(**arch["unet"])
            if "transformer" in arch:
                cls, config = arch["transformer"]
                parts["transformer"] = getattr(diffusers, cls)(**config)
            parts["vae"] = diffusers.AutoencoderKL(**arch["vae"])
            for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
                if name not in arch:
                    continue
                if arch[name] is None:
                    parts[name] = None
                    continue
                cls, config = arch[name]
                config_cls = transformers.T5Config if cls == "T5EncoderModel" else transformers.CLIPTextConfig
                parts[name] = getattr(transformers, cls)(config_cls(**config))
    finally:
        torch.set_default_dtype(previous)
    for name, module in parts.items():
        if module is not None:
            _tame_init(module)
            module.to(dtype)
    parts["scheduler"] = getattr(diffusers, arch["scheduler"])(**arch.get("scheduler_config", {}))
    parts["tokenizer"] = clip_tokenizer
    if "text_encoder_2" in arch:
        parts["tokenizer_2"] = _t5_tokenizer() if arch["text_encoder_2"][0] == "T5EncoderModel" else clip_tokenizer
    if "text_encoder_3" in arch:
        parts["tokenizer_3"] = None
    pipeline_cls = getattr(diffusers, arch["pipeline"])
    extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False} if arch["family"] == "sd1" else {}
    pipe = pipeline_cls(**parts, **extra)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    del pipe, parts
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return folder


# --- timing ----------------------------------------------------------------------------------------

def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _free(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


@dataclass
class Mode:
    """One row's setup: `make()` makes one picture; `first_s` is load + first picture; `close()` frees it."""

    name: str
    make: object
    first_s: float
    note: str
    close: object


def diffusers_mode(folder: Path, family: str, dtype, device: str, size: int, steps: int, cfg: float,
                   tf32_defaults: tuple[bool, bool]) -> Mode:
    """The hand-written baseline: from_pretrained in the half dtype, .to(device), pipe(...)."""
    import diffusers
    import torch

    def defaults():  # PyTorch's TF32 defaults: Kiri's fast path turns TF32 on process-wide
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_defaults

    defaults()
    started = time.perf_counter()
    left_out = {"text_encoder_3": None, "tokenizer_3": None} if family == "sd3" else {}  # SD3 without T5
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(folder), dtype=dtype, **left_out).to(device)
    pipe.set_progress_bar_config(disable=True)
    if family not in ("sd3", "flux"):
        # Euler, as Kiri's rows use (a default model's folder may name another scheduler)
        pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)

    def make():
        defaults()
        return pipe(PROMPT, num_inference_steps=steps, height=size, width=size, guidance_scale=cfg,
                    generator=torch.Generator().manual_seed(1)).images

    make()
    _sync(device)
    holder = [pipe]
    return Mode("diffusers", make, time.perf_counter() - started, "", holder.clear)


def kiri_mode(label: str, name: str, models_dir: Path, device_choice, size: int, steps: int, cfg: float,
              step_cache: str | None, **settings) -> Mode:
    """Kiri's engine on the same folder: build_engine, load_model, engine.txt2img as the UI and API do."""
    from webui.bootstrap import build_engine
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.settings import Settings

    out = tempfile.TemporaryDirectory()
    started = time.perf_counter()
    engine = build_engine(Settings(models_dir=models_dir, outputs_dir=Path(out.name), save_images=False, **settings),
                          device_choice)
    model = engine.load_model(name)
    sampler = "Flow Euler" if model.prediction == "flow" else "Euler"
    request = Txt2ImgRequest(PROMPT, steps=steps, width=size, height=size, seed=1, model=name, sampler_name=sampler,
                             cfg_scale=cfg, save_images=False, addons={"step_cache": step_cache} if step_cache else {})

    def make():
        return engine.txt2img(request).images

    make()
    _sync(device_choice.device)
    first = time.perf_counter() - started
    note = (model.fast_path.text() if model.fast_path is not None else "") + (f"; step cache {step_cache}" if step_cache else "")

    def close():
        import torch

        engine.models.unload()
        out.cleanup()
        if settings.get("compile_blocks"):
            torch._dynamo.reset()

    return Mode(label, make, first, note, close)


def timed_rows(model: str, setups: list, runs: int, steps: int, device: str, interleave: bool, warmup: int = 0) -> list[Row]:
    """Each setup's row. One after another (the default on a GPU: each row's peak VRAM is its own), or
    all loaded at once and their images made in turns (on a shared CPU: a busy spell slows every row alike)."""
    import torch

    cuda = device.startswith("cuda")
    rows: list[Row] = []
    if interleave:
        modes = [setup() for setup in setups]
        for _ in range(warmup):
            for mode in modes:
                mode.make()
        times: list[list[float]] = [[] for _ in modes]
        for _ in range(runs):
            for mode, spent in zip(modes, times):
                started = time.perf_counter()
                mode.make()
                _sync(device)
                spent.append(time.perf_counter() - started)
        for mode, spent in zip(modes, times):
            s = statistics.median(spent)
            rows.append(Row(model, mode.name, s, steps / s, 1.0, 0.0, mode.first_s, mode.note))
            mode.close()
        _free(device)
    else:
        for setup in setups:
            _free(device)
            mode = setup()
            for _ in range(warmup):
                mode.make()
            _sync(device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            spent = []
            for _ in range(runs):
                started = time.perf_counter()
                mode.make()
                _sync(device)
                spent.append(time.perf_counter() - started)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
            s = statistics.median(spent)
            rows.append(Row(model, mode.name, s, steps / s, 1.0, peak, mode.first_s, mode.note))
            mode.close()
            del mode
            _free(device)
    for row in rows[1:]:
        row.speedup = rows[0].s_per_image / row.s_per_image
    return rows


# --- the run ---------------------------------------------------------------------------------------

def print_rows(rows: list[Row], header: str) -> None:
    if header:
        print(header)
    print(f"{'model':18} {'mode':18} {'s/image':>8} {'it/s':>7} {'vs diffusers':>12} {'peak VRAM GB':>12} {'1st image s':>11}  fast path")
    for r in rows:
        print(f"{r.model:18} {r.mode:18} {r.s_per_image:8.3f} {r.it_s:7.2f} {r.speedup:11.2f}x {r.peak_vram_gb:12.2f} "
              f"{r.first_image_s:11.1f}  {r.note}")
    sys.stdout.flush()


def bench_model(name: str, models_dir: Path, family: str, device_choice, dtype, size: int, steps: int, runs: int,
                modes: list[str], step_cache: str | None, tf32_defaults, interleave: bool, warmup: int = 0) -> list[Row]:
    device = device_choice.device
    cfg = 3.5 if family == "flux" else 7.0
    folder = models_dir / "checkpoints" / name
    cache = step_cache or STEP_CACHE.get(family)
    common = (name, models_dir, device_choice, size, steps, cfg)
    setups = [lambda: diffusers_mode(folder, family, dtype, device, size, steps, cfg, tf32_defaults)]
    labels = {"kiri": ("kiri", None, {}), "compiled": ("kiri compiled", None, {"compile_blocks": True}),
              "cached": ("kiri + step cache", cache, {})}
    for mode in modes:
        label, cached, settings = labels[mode]
        setups.append(lambda label=label, cached=cached, settings=settings: kiri_mode(label, *common, cached, **settings))
    return timed_rows(name, setups, runs, steps, device, interleave, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sd15,sdxl,sd3", help="GPU architectures: sd15, sdxl, sd3, flux (comma-separated)")
    parser.add_argument("--modes", default="kiri,compiled,cached", help="Kiri rows: kiri, compiled, cached")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=None, help="image side (default: each model's native size; 64 on the CPU)")
    parser.add_argument("--step-cache", default=None, help="the cached row's step cache (default: per family)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the random-weight folders go (default: a temp dir)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models", help="the CPU mode's models")
    parser.add_argument("--cpu", action="store_true", help="the CPU mode even where CUDA is available")
    parser.add_argument("--dry-run", action="store_true", help="shrunk GPU architectures on the CPU, in fp32")
    parser.add_argument("--warmup", type=int, default=0,
                        help="more untimed images per row after the first (the first always is); on a busy CPU the first "
                             "few plain-pipeline calls of a process can be many times slower")
    parser.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None,
                        help="load every row's pipeline at once and make their images in turns (default on the CPU, "
                             "where other work shares the cores; off on a GPU, where each row's peak VRAM is its own)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    import logging

    import diffusers
    import torch
    import transformers

    from webui.engine.core.devices import DeviceChoice

    logging.basicConfig(level=logging.WARNING)
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    tf32_defaults = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    gpu = torch.cuda.is_available() and not args.cpu
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rows: list[Row] = []
    if gpu or args.dry_run:
        from configs.architectures import ARCHITECTURES, shrunk

        device = "cuda" if gpu and not args.dry_run else "cpu"
        choice = DeviceChoice(device)
        card = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (dry run, shrunk architectures)"
        work = Path(args.work_dir or tempfile.mkdtemp(prefix="kiri-gpu-bench-"))
        print(f"{card}; torch {torch.__version__}; {args.steps} steps; {args.runs} timed images per row after one warm-up")
        try:
            for key in [k.strip() for k in args.models.split(",") if k.strip()]:
                arch = ARCHITECTURES[key] if not args.dry_run else shrunk(ARCHITECTURES[key])
                family = arch["family"]
                dtype = choice.plan_for(family).torch_dtype("denoiser")
                size = args.size or arch["size"]
                name = f"bench-{key}"
                folder = work / "checkpoints" / name
                started = time.perf_counter()
                if not (folder / "model_index.json").exists():
                    build_folder(arch, folder, dtype, device)
                print(f"# {key}: {arch['pipeline']} at {size}x{size} in {str(dtype).replace('torch.', '')} "
                      f"(built in {time.perf_counter() - started:.0f} s)")
                model_rows = bench_model(name, work, family, choice, dtype, size, args.steps, args.runs,
                                         [m for m in modes if device == "cuda" or m != "compiled"], args.step_cache,
                                         tf32_defaults, args.interleave, args.warmup)
                print_rows(model_rows, "")
                rows += model_rows
        finally:
            if args.work_dir is None:
                shutil.rmtree(work, ignore_errors=True)
    else:
        size = args.size or 64
        print(f"CPU ({torch.get_num_threads()} torch threads); torch {torch.__version__}; {args.steps} steps at "
              f"{size}x{size}; {args.runs} timed images per row after one warm-up")
        choice = DeviceChoice("cpu")
        for name in CPU_MODELS:
            family = "sd1" if name.endswith("ldm") else "sd3"
            model_rows = bench_model(name, args.models_dir, family, choice, torch.float32, size, args.steps, args.runs,
                                     [m for m in modes if m != "compiled"], args.step_cache, tf32_defaults,
                                     args.interleave is not False, args.warmup)
            print_rows(model_rows, "")
            rows += model_rows
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2))


if __name__ == "__main__":
    main()
