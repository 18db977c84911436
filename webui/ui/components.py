"""Widget groups the generation tabs share: sampler, steps, size, batches, CFG, seed, clip skip, VAE;
and the status line under the gallery. One place, so Text to image and Image to image stay alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.engine.generation import requests as limits
from webui.engine.generation.call import ClipSkip
from webui.engine.samplers.registry import SCHEDULES
from webui.engine.stepcache import METHODS as STEP_CACHES
from webui.engine import vae as vae_addon

from .common import interrupted_at


@dataclass
class GenerationSettings:
    sampler: gr.Dropdown
    schedule: gr.Dropdown
    steps: gr.Slider
    width: gr.Slider
    height: gr.Slider
    batch_count: gr.Slider
    batch_size: gr.Slider
    cfg_scale: gr.Slider
    seed: gr.Number
    clip_skip: gr.Slider
    step_cache: gr.Dropdown | None = None
    vae: gr.Dropdown | None = None

    def inputs(self) -> dict[str, Any]:
        """Handler keyword -> component, for `inputs_kwargs`; the handler passes them to request_fields()."""
        return dict(sampler_name=self.sampler, scheduler=self.schedule, steps=self.steps, cfg_scale=self.cfg_scale,
                    seed=self.seed, width=self.width, height=self.height, batch_size=self.batch_size,
                    batch_count=self.batch_count, clip_skip=self.clip_skip,
                    **({"step_cache": self.step_cache} if self.step_cache is not None else {}),
                    **({"vae": self.vae} if self.vae is not None else {}))


def generation_settings(prefix: str, samplers: list[str], sampler: str, size: int, defaults: Any = None) -> GenerationSettings:
    """The widgets every generation tab shares; `defaults` (generation/defaults.ModelDefaults): the model's
    schedule, steps and CFG scale (a few-step model's recipe), else 20 steps at CFG 7."""
    schedule = (getattr(defaults, "scheduler", None) or "Automatic")
    with gr.Row():
        # Custom values pass through so the engine, which knows the loaded model, names the valid ones.
        sampler_dd = gr.Dropdown(samplers, value=sampler, label="Sampler", elem_id=f"{prefix}-sampler", allow_custom_value=True)
        schedule_dd = gr.Dropdown(list(SCHEDULES), value=schedule, label="Schedule type", elem_id=f"{prefix}-schedule")
    steps = gr.Slider(1, limits.MAX_STEPS, value=getattr(defaults, "steps", 20), step=1, label="Sampling steps",
                      elem_id=f"{prefix}-steps")
    with gr.Row():
        width = gr.Slider(limits.MIN_SIZE, limits.MAX_SIZE, value=size, step=8, label="Width", elem_id=f"{prefix}-width")
        height = gr.Slider(limits.MIN_SIZE, limits.MAX_SIZE, value=size, step=8, label="Height", elem_id=f"{prefix}-height")
    with gr.Row():
        batch_count = gr.Slider(1, limits.MAX_BATCH_COUNT, value=1, step=1, label="Batch count")
        batch_size = gr.Slider(1, limits.MAX_BATCH_SIZE, value=1, step=1, label="Batch size")
    with gr.Row():
        cfg = gr.Slider(0, limits.MAX_CFG, value=getattr(defaults, "cfg_scale", 7.0), step=0.5, label="CFG scale", scale=3,
                        elem_id=f"{prefix}-cfg")
        clip_skip = gr.Slider(1, ClipSkip.MAX, value=1, step=1, label="Clip skip", scale=1, elem_id=f"{prefix}-clip-skip")
    seed = gr.Number(-1, label="Seed (-1 = random)", precision=0, elem_id=f"{prefix}-seed")
    return GenerationSettings(sampler_dd, schedule_dd, steps, width, height, batch_count, batch_size, cfg, seed, clip_skip)


def step_cache_choice(prefix: str) -> gr.Dropdown:
    """Step caching for this request: the Settings tab's default, off, or one method at its defaults."""
    choices = [("Settings default", ""), ("Off", "off"), *[(m.label, m.name) for m in STEP_CACHES.values()]]
    with gr.Accordion("Step cache: faster, slightly different pictures", open=False):
        return gr.Dropdown(choices, value="", label="Step cache", elem_id=f"{prefix}-step-cache")


def vae_choices(catalog: Any) -> list[tuple[str, str]]:
    return [("Settings default", ""), *[(name, name) for name in vae_addon.choices(catalog)]]


def vae_choice(prefix: str, catalog: Any) -> gr.Dropdown:
    """The VAE for this request: the Settings tab's default, Automatic, None, or one from models/VAE/;
    the button reads the folder again."""
    with gr.Row(equal_height=True):
        dropdown = gr.Dropdown(vae_choices(catalog), value="", label="VAE", elem_id=f"{prefix}-vae", scale=6)
        refresh = gr.Button("↻", size="sm", min_width=40, scale=0, elem_id=f"{prefix}-vae-refresh")

    def rescan() -> dict:
        catalog.scan()
        return gr.update(choices=vae_choices(catalog))

    refresh.click(rescan, None, dropdown, api_visibility="private", queue=False)
    return dropdown


def request_fields(sampler_name, scheduler, steps, cfg_scale, seed, width, height, batch_size, batch_count, clip_skip=1,
                   model: str | None = None, step_cache: str = "", vae: str = "") -> dict[str, Any]:
    """Widget values -> the generation request's fields (one mapping for every tab)."""
    clip = int(clip_skip or 1)
    addons: dict[str, Any] = {"clip_skip": clip} if clip != 1 else {}
    if step_cache:
        addons["step_cache"] = step_cache
    if vae:  # "": the sd_vae setting decides
        addons["vae"] = vae
    return dict(
        sampler_name=sampler_name or None, scheduler=scheduler or None, steps=int(steps), cfg_scale=float(cfg_scale),
        seed=int(seed if seed is not None else -1), width=int(width), height=int(height),
        batch_size=int(batch_size), n_iter=int(batch_count), model=model or None,
        addons=addons,
    )


# An output gallery is never an upload box, even when a "Send to" button reads it as an input.
RESULTS_ONLY = dict(interactive=False)


def result_note(result, elapsed: float, job=None) -> str:
    note = f"{len(result.images)} image(s) in {elapsed:.1f} s with {result.model_name}, {result.sampler_name}."
    if result.interrupted:
        where = interrupted_at(job) if job is not None and job.steps else "**Interrupted**"
        kept = "the finished images are kept" if result.images else (
            "no image was finished; the last live preview stays on screen" if job is not None and job.preview is not None
            else "no image was finished")
        note = f"{where}: {kept}. " + note
    if result.paths:
        note += f" Saved to `{result.paths[0].parent}`."
    return note


def shown_images(result) -> list:
    return [str(p) for p in result.paths] if result.paths else result.images


def finished_outputs(result, job, elapsed: float) -> tuple:
    """(gallery, infotext, status) once a generation is over. An interrupted job keeps what it made;
    with nothing made, the last live preview (or what was there before) stays: never a blank screen."""
    note = result_note(result, elapsed, job)
    if result.images:
        return shown_images(result), (result.infotexts[0] if result.infotexts else ""), note
    preview = job.preview if result.interrupted else None
    return ([preview] if preview is not None else gr.skip()), gr.skip(), note
