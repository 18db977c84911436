"""The Text to image tab: prompt and settings on the left, gallery and parameters on the right."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.errors import KiriError
from webui.engine.core.jobs import Job
from webui.engine.generation.requests import HiresFix, Txt2ImgRequest
from webui.engine.upscale import all_upscalers, hires_defaults
from webui.engine.generation.defaults import ModelDefaults, defaults_for, model_defaults
from webui.engine.generation.xy_grid import AXES, NOTHING, xy_grid

from . import controlnet, extra_networks
from . import detailer as detailer_ui
from . import styles as styles_ui
from .common import JOB_EVENT, QUIET_PROGRESS, interrupted_at, owner_of, progress_line, stream_job, user_errors
from .send_to import SendTo
from .token_counter import token_counter
from .components import (RESULTS_ONLY, GenerationSettings, finished_outputs, generation_settings, request_fields,
                         step_cache_choice, vae_choice)


@dataclass
class Txt2ImgTab:
    """The components other tabs fill in (PNG info's "Send to Text to image")."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    settings: GenerationSettings
    gallery: gr.Gallery
    styles: gr.Dropdown | None = None
    detailer: detailer_ui.Panel | None = None  # PNG info sends a picture's ADetailer keys back to it
    hires: dict[str, Any] | None = None  # the Hires. fix widgets by input name (enable_hr, hr_scale, ...)
    control: controlnet.ControlPanel | None = None  # the Library's Reproduce sets a picture's units back


def _model_defaults(engine: Engine) -> tuple[list[str], str, int, list[str]]:
    """Samplers that fit the model Kiri would use, its default sampler (a few-step model's own), its native
    size and example prompts."""
    try:
        entry = engine.current_entry()
        prediction, size, examples = entry.prediction, entry.native_size, entry.example_prompts()
    except KiriError:
        entry, prediction, size, examples = None, "epsilon", 512, []
    return engine.samplers.names(prediction), defaults_for(entry).sampler_name, size, examples


def _defaults_plain(defaults: ModelDefaults) -> dict[str, Any]:
    """What a tab keeps of a model's defaults in its gr.State: the widget values they set."""
    return {"sampler": defaults.sampler_name, "schedule": defaults.scheduler or "Automatic", "steps": defaults.steps,
            "cfg": defaults.cfg_scale}


def follow_defaults(old: dict | None, new: ModelDefaults, sampler: Any, schedule: Any, steps: Any, cfg: Any,
                    model_changed: bool = False) -> tuple[Any, Any, Any, Any]:
    """The sampler, schedule, steps and CFG widgets' updates when the defaults change (another model picked,
    a few-step LoRA put into or taken out of the prompt): each value the user left at the old default takes
    the new one (a few-step model's 4 steps at CFG 1, back to 20 at 7); a value the user set is kept. A new
    model always gets its sampler, as its sampler list changes with it."""
    old = old or {}
    fresh = _defaults_plain(new)

    def follow(key: str, value: Any) -> Any:
        if key not in old or value == old[key] or (key in ("steps", "cfg") and _same_number(value, old[key])):
            return gr.update(value=fresh[key])
        return gr.update()

    first = gr.update(value=fresh["sampler"]) if model_changed else follow("sampler", sampler)
    return first, follow("schedule", schedule), follow("steps", steps), follow("cfg", cfg)


def defaults_update(engine: Engine, title: str | None, prompt: str | None, sampler: Any, schedule: Any, steps: Any,
                    cfg: Any, old: dict | None, model_changed: bool = False) -> tuple[Any, ...]:
    """Updates of (sampler, schedule, steps, CFG, the defaults note, the defaults state) for the picked
    model and the prompt's LoRAs (generation/defaults.py); nothing changes while the defaults do not."""
    try:
        entry = engine.catalog.find(title) if title else engine.current_entry()
    except KiriError:
        entry = None
    defaults = defaults_for(entry, engine.catalog, prompt)
    if _defaults_plain(defaults) == old and not model_changed:
        return (gr.update(),) * 5 + (old,)
    return (*follow_defaults(old, defaults, sampler, schedule, steps, cfg, model_changed),
            gr.update(value=defaults.note, visible=bool(defaults.note)), _defaults_plain(defaults))


def _same_number(a: Any, b: Any) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return False


def render(engine: Engine, model_picker: gr.Dropdown, send: SendTo | None = None) -> Txt2ImgTab:
    samplers, sampler, size, examples = _model_defaults(engine)
    first_defaults = model_defaults(engine)  # the selected model's; a prompt's LoRA changes them as it is typed
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="a small red circle on the left, blue background", elem_id="txt2img-prompt")
            token_counter(engine, prompt, "txt2img-token-counter")
            # Small models understand only their own caption grammar: show prompts they were made for.
            example_prompts = gr.Dataset(components=[prompt], samples=[[e] for e in examples], label="Example prompts for this model",
                                         visible=bool(examples), elem_id="txt2img-examples")
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="txt2img-negative")
            token_counter(engine, negative, "txt2img-negative-token-counter")
            styles = styles_ui.render(engine, "txt2img", prompt, negative).dropdown
            gen = generation_settings("txt2img", samplers, sampler, size, first_defaults)
            # A few-step model's recipe (LCM, Turbo, Lightning...), said where the settings are.
            defaults_note = gr.Markdown(first_defaults.note, visible=bool(first_defaults.note), elem_id="txt2img-model-defaults")
            defaults_state = gr.State(_defaults_plain(first_defaults))
            gen.vae = vae_choice("txt2img", engine.catalog)
            random_seed = gr.Button("Random seed", size="sm", min_width=80)
            gen.step_cache = step_cache_choice("txt2img")
            control = controlnet.render(engine, "txt2img", model_picker, size=(gen.width, gen.height))
            detail = detailer_ui.render(engine, "txt2img")
            # Kiri's hires default for the model (upscale.hires_defaults): for the embedded 64 px models an
            # upscaler model and no second-pass denoising, which keeps the picture as it is.
            hr_default_upscaler, hr_default_strength = hires_defaults(engine)
            with gr.Accordion("Hires. fix", open=False, elem_id="txt2img-hires"):
                enable_hr = gr.Checkbox(False, label="Enable hires fix", elem_id="txt2img-enable-hr")
                with gr.Row():
                    hr_upscaler = gr.Dropdown([(u.label, u.name) for u in all_upscalers(engine.catalog, latent=True)],
                                              value=hr_default_upscaler, label="Upscaler", elem_id="txt2img-hr-upscaler")
                    hr_scale = gr.Slider(1, 4, value=2, step=0.05, label="Upscale by", elem_id="txt2img-hr-scale")
                with gr.Row():
                    hr_steps = gr.Slider(0, 150, value=0, step=1, label="Hires steps (0: same as sampling)",
                                         elem_id="txt2img-hr-steps")
                    hr_denoise = gr.Slider(0, 1, value=hr_default_strength, step=0.01, label="Denoising strength",
                                           elem_id="txt2img-hr-denoise",
                                           info="above 0 the second pass redraws the bigger picture; a model "
                                                "trained at a smaller size may add objects")
                with gr.Row():
                    hr_resize_x = gr.Slider(0, 2048, value=0, step=8, label="Resize width to (0: by scale)",
                                            elem_id="txt2img-hr-resize-x")
                    hr_resize_y = gr.Slider(0, 2048, value=0, step=8, label="Resize height to (0: by scale)",
                                            elem_id="txt2img-hr-resize-y")
            with gr.Accordion("X/Y grid: compare samplers, steps, CFG...", open=False, elem_id="xy-grid"):
                with gr.Row():
                    x_axis = gr.Dropdown(list(AXES), value="Sampler", label="X axis")
                    x_values = gr.Textbox(value="Euler, DPM++ 2M", label="X values", elem_id="xy-x-values")
                with gr.Row():
                    y_axis = gr.Dropdown([NOTHING, *AXES], value="Steps", label="Y axis")
                    y_values = gr.Textbox(value="5, 10, 20", label="Y values (numbers: 10-30 (+10) or 1-9 [5])",
                                           elem_id="xy-y-values")
                with gr.Row(elem_id="xy-actions"):  # the grid's progress and result line beside its button
                    grid_button = gr.Button("Generate grid", elem_id="xy-generate", scale=1)
                    grid_status = gr.Markdown(elem_id="xy-status", elem_classes=["kiri-status"])
        with gr.Column(scale=4, elem_classes=["kiri-output"]):
            with gr.Row(elem_classes=["kiri-actions"]):
                generate = gr.Button("Generate", variant="primary", elem_id="txt2img-generate", scale=3, elem_classes=["kiri-generate"])
                interrupt = gr.Button("Interrupt", variant="stop", elem_id="txt2img-interrupt", scale=1, elem_classes=["kiri-interrupt"])
                skip = gr.Button("Skip", elem_id="txt2img-skip", scale=1)
            gallery = gr.Gallery(label="Images", columns=4, height=420, object_fit="contain", preview=True, format="png",
                                 elem_id="txt2img-gallery", **RESULTS_ONLY)
            status = gr.Markdown(elem_id="txt2img-status", elem_classes=["kiri-status"])
            menu = send.menu("txt2img", gallery) if send is not None else None
            infotext = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id="txt2img-infotext")
            if menu is not None:
                menu.infotext = infotext

    def run(prompt, negative_prompt, request: gr.Request, progress: gr.Progress = gr.Progress(), **settings):
        """Generate images from text; yields live previews, then the images, the first infotext and a status line."""
        job = Job(kind="txt2img", owner=owner_of(request))
        started = time.perf_counter()
        hires = _hires_fix(settings)
        chosen = list(settings.pop("styles", None) or [])
        with user_errors():
            units = control.pop_addons(settings)
            units.update(detail.pop_addons(settings))
            fields = request_fields(**settings)
            fields["addons"].update(units)
            req = Txt2ImgRequest(prompt=prompt or "", negative_prompt=negative_prompt or "", **fields, hires=hires, styles=chosen)
            result = yield from stream_job(lambda: engine.txt2img(req, job), job, progress,
                                           lambda preview: ([preview], "", progress_line(job)),
                                           lambda: (gr.skip(), gr.skip(), progress_line(job)))
        for warning in result.warnings:
            gr.Warning(warning)
        yield finished_outputs(result, job, time.perf_counter() - started)

    inputs = dict(prompt=prompt, negative_prompt=negative, **gen.inputs(), model=model_picker, styles=styles, **control.inputs(),
                  **detail.inputs())
    hires_inputs = dict(enable_hr=enable_hr, hr_upscaler=hr_upscaler, hr_scale=hr_scale, hr_steps=hr_steps,
                        hr_denoise=hr_denoise, hr_resize_x=hr_resize_x, hr_resize_y=hr_resize_y)
    generate.click(run, inputs_kwargs={**inputs, **hires_inputs}, outputs=[gallery, infotext, status], api_name="txt2img", **JOB_EVENT,
                   **QUIET_PROGRESS)
    prompt.submit(run, inputs_kwargs={**inputs, **hires_inputs}, outputs=[gallery, infotext, status], api_visibility="private",
                 **JOB_EVENT, **QUIET_PROGRESS)

    def run_grid(prompt, negative_prompt, x_axis, x_values, y_axis, y_values, request: gr.Request,
                 progress: gr.Progress = gr.Progress(), **settings):
        """One image per X/Y cell with the same seed, and the labelled grid first in the gallery; while
        it runs, each cell's live preview and the progress strip, as Generate shows them (no overlay)."""
        job = Job(kind="xy_grid", owner=owner_of(request))
        chosen = list(settings.pop("styles", None) or [])
        with user_errors():
            units = control.pop_addons(settings)
            units.update(detail.pop_addons(settings, show_before=False))
            fields = request_fields(**{**settings, "batch_size": 1, "batch_count": 1})
            fields["addons"].update(units)
            base = Txt2ImgRequest(prompt=prompt or "", negative_prompt=negative_prompt or "", **fields, styles=chosen)
            result = yield from stream_job(
                lambda: xy_grid(engine, base, x_axis, x_values or "", y_axis, y_values or "", job), job, progress,
                lambda preview: ([preview], "", progress_line(job), progress_line(job)),
                lambda: (gr.skip(), gr.skip(), progress_line(job), progress_line(job)))
        for warning in result.warnings:
            gr.Warning(warning)
        if result.grid is None:
            note = interrupted_at(job) + " (before the first cell finished)."
            yield [], "", note, note
            return
        shown = [str(result.path) if result.path else result.grid, *result.images]
        note = f"Grid of {len(result.images)} cell(s)" + (f" ({interrupted_at(job)})" if result.interrupted else "") + "."
        # the grid is what the run is for: shown and selected first (the cells follow it), whatever was selected before
        yield gr.Gallery(value=shown, selected_index=0), result.infotexts[0], note, note

    grid_inputs = {k: v for k, v in inputs.items() if k not in ("batch_size", "batch_count")}
    grid_inputs.update(x_axis=x_axis, x_values=x_values, y_axis=y_axis, y_values=y_values)
    grid_button.click(run_grid, inputs_kwargs=grid_inputs, outputs=[gallery, infotext, status, grid_status], api_name="txt2img_xy_grid",
                      **JOB_EVENT, **QUIET_PROGRESS)

    def stop(request: gr.Request) -> str:
        told = engine.interrupt(owner_of(request))
        return "Interrupting after the current step…" if told else "Nothing is running."

    interrupt.click(stop, None, status, api_name="interrupt", queue=False)

    def skip_batch(request: gr.Request) -> str:
        told = engine.skip(owner_of(request))
        return "Skipping the current batch…" if told else "Nothing is running."

    skip.click(skip_batch, None, status, api_name="skip", queue=False)
    random_seed.click(lambda: -1, None, gen.seed, api_visibility="private", queue=False)

    def show_selected(evt: gr.SelectData) -> str:
        return _infotext_of(evt.value)

    gallery.select(show_selected, None, infotext, api_visibility="private", queue=False)

    example_prompts.click(lambda sample: sample[0], example_prompts, prompt, api_visibility="private", queue=False)

    def on_model_change(title: str | None, text, sampler, schedule, steps, cfg, old_defaults):
        entry = engine.catalog.find(title) if title else None
        prediction = entry.prediction if entry else "epsilon"
        examples = entry.example_prompts() if entry else []
        upscaler, strength = hires_defaults(engine, entry.name if entry else None)
        first, *rest = defaults_update(engine, title, text, sampler, schedule, steps, cfg, old_defaults, model_changed=True)
        return (gr.update(choices=engine.samplers.names(prediction), value=first["value"]), *rest,
                gr.update(samples=[[e] for e in examples], visible=bool(examples)),
                gr.update(value=upscaler), gr.update(value=strength))

    defaults_inputs = [gen.sampler, gen.schedule, gen.steps, gen.cfg_scale, defaults_state]
    defaults_outputs = [gen.sampler, gen.schedule, gen.steps, gen.cfg_scale, defaults_note, defaults_state]
    model_picker.change(on_model_change, [model_picker, prompt, *defaults_inputs],
                        [*defaults_outputs, example_prompts, hr_upscaler, hr_denoise], api_visibility="private", queue=False)
    # a few-step LoRA put into the prompt (its card, or typed) brings its recipe; taken out, the model's comes back
    prompt.change(lambda title, text, *values: defaults_update(engine, title, text, *values),
                  [model_picker, prompt, *defaults_inputs], defaults_outputs, queue=False, show_progress="hidden",
                  api_visibility="private", trigger_mode="always_last")
    extra_networks.render(engine, "txt2img", prompt, gallery, model_picker)
    return Txt2ImgTab(prompt, negative, gen, gallery, styles, detail, hires_inputs, control)


def hires_from_infotext(widgets: dict[str, Any], params: dict[str, str]) -> tuple[dict, list[str]]:
    """({widget: value}, notes) for a picture's Hires keys (PNG info's "Send to Text to image", the Library's
    Reproduce): the fix as it was made, or turned off for a picture made without it. A value the tab cannot
    take (an upscaler this server lacks, a hires sampler or prompt of its own) is a note, not a guess."""
    on = "Hires upscale" in params or "Hires resize" in params
    updates: dict = {widgets["enable_hr"]: on}
    notes: list[str] = []
    if not on:
        return updates, notes

    def number(key: str, kind=float):
        try:
            return kind(float(params[key])) if params.get(key) else None
        except ValueError:
            notes.append(f"{key} {params[key]!r} is not a number; left as it was")
            return None

    resize = re.fullmatch(r"(\d+)x(\d+)", params.get("Hires resize", "").strip())
    if resize:
        updates[widgets["hr_resize_x"]], updates[widgets["hr_resize_y"]] = int(resize.group(1)), int(resize.group(2))
    else:
        updates[widgets["hr_resize_x"]] = updates[widgets["hr_resize_y"]] = 0
        if (scale := number("Hires upscale")) is not None:
            updates[widgets["hr_scale"]] = scale
    updates[widgets["hr_steps"]] = number("Hires steps", int) or 0
    if (strength := number("Denoising strength")) is not None:
        updates[widgets["hr_denoise"]] = strength
    upscaler = params.get("Hires upscaler")
    if upscaler:
        names = [c[1] if isinstance(c, (tuple, list)) else c for c in widgets["hr_upscaler"].choices or []]
        if upscaler in names:
            updates[widgets["hr_upscaler"]] = upscaler
        else:
            notes.append(f"Hires upscaler {upscaler!r} is not on this server; the current one is kept")
    for key in ("Hires sampler", "Hires prompt", "Hires negative prompt"):
        if params.get(key):
            notes.append(f"{key} is not a field of this tab (the API takes it): the second pass uses the main one")
    return updates, notes


def _hires_fix(settings: dict) -> HiresFix | None:
    """Pops the Hires. fix widgets' values out of `settings`; the fix when enabled, else None."""
    values = {k: settings.pop(k, None) for k in ("enable_hr", "hr_upscaler", "hr_scale", "hr_steps", "hr_denoise",
                                                 "hr_resize_x", "hr_resize_y")}
    if not values["enable_hr"]:
        return None
    return HiresFix(scale=float(values["hr_scale"] or 2), upscaler=values["hr_upscaler"] or None,
                    steps=int(values["hr_steps"] or 0), resize_x=int(values["hr_resize_x"] or 0),
                    resize_y=int(values["hr_resize_y"] or 0), denoising_strength=float(values["hr_denoise"] or 0))


def _infotext_of(value) -> str:
    from PIL import Image

    from webui.engine.core.infotext import read_infotext

    path = (value or {}).get("image", {}).get("path") if isinstance(value, dict) else None
    if not path:
        return ""
    try:
        with Image.open(path) as image:  # metadata only: no pixel is decoded
            return read_infotext(image) or ""
    except (OSError, Image.DecompressionBombError):  # not a picture Kiri can read: no infotext to show
        return ""
