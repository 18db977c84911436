"""The Settings tab: the options that change how Kiri runs, grouped, checked, saved to the settings file
and applied at once (the engine reads each of them per job, the model manager's limits are set here)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.errors import InvalidRequest
from webui.engine import lora, vae
from webui.engine.stepcache import METHODS, parse, text_of


def render(engine: Engine, settings_file: Path, app: gr.Blocks) -> None:
    s = engine.settings
    # Each field shows the saved value: one load event per page reads them all and only then lets the fields be
    # edited, so a value typed while the page loads is never overwritten by the load (a reload shows what was saved).
    fixed = {"interactive": False}
    gr.Markdown(f"Settings are saved to `{settings_file}` and take effect at once.")
    with gr.Group():
        gr.Markdown("### Images and previews")
        preview_every = gr.Number(s.preview_every, **fixed, precision=0, elem_id="settings-preview-every",
                                  label="Live preview every N steps (0: no live preview)")
        save_images = gr.Checkbox(s.save_images, **fixed, label="Save every generated image to the outputs folder",
                                  elem_id="settings-save-images")
        image_format = gr.Radio(["png", "jpg", "webp"], value=s.image_format, **fixed, label="Image format",
                                elem_id="settings-image-format")
    with gr.Group():
        gr.Markdown("### Models")
        default_model = gr.Textbox(s.default_model or "", **fixed, label="Model to load at start (empty: Kiri's default)")
        sd_vae = gr.Dropdown(vae.choices(engine.catalog), value=s.sd_vae, **fixed, allow_custom_value=True, elem_id="settings-sd-vae",
                             label="VAE for requests that name none (Automatic: one named like the checkpoint, else its own)")
        step_cache = gr.Dropdown([("Off", ""), *[(m.label, text_of(parse(m.name))) for m in METHODS.values()]],
                                 value=s.step_cache, **fixed, allow_custom_value=True, elem_id="settings-step-cache",
                                 label="Step cache for requests that name none (method and parameters, e.g. taylorseer 5 warmup=3)")
        use_embeddings = gr.Checkbox(s.use_embeddings, **fixed, elem_id="settings-use-embeddings",
                                     label="Use textual inversion embeddings named in prompts (embeddings/, models/embeddings/)")
        lora_weight = gr.Number(s.extra_networks_default_multiplier, **fixed, elem_id="settings-lora-weight",
                                label="LoRA weight of a <lora:name> tag that gives none")
        cache = gr.Number(s.model_cache_size, **fixed, precision=0, elem_id="settings-model-cache-size",
                          label="Models kept loaded (checkpoints, most recently used first)")
        budget = gr.Number(s.model_memory_budget_mb, **fixed, precision=0, elem_id="settings-model-memory-budget",
                           label="Memory for all loaded models, in MB (0: no limit; the least recently used is unloaded first)")
    with gr.Group():
        gr.Markdown("### Size limits (pixels; a larger request is refused before it runs)")
        max_pixels = gr.Number(s.max_pixels, **fixed, precision=0, elem_id="settings-max-pixels",
                               label="Largest input picture or video frame (width x height)")
        max_output = gr.Number(s.max_output_pixels, **fixed, precision=0, elem_id="settings-max-output-pixels",
                               label="Largest picture made, upscales included (width x height)")
        max_video = gr.Number(s.max_video_pixels, **fixed, precision=0, elem_id="settings-max-video-pixels",
                              label="Largest video read, all frames together (frames x width x height)")
    save = gr.Button("Apply settings", variant="primary", elem_id="settings-apply")
    result = gr.Markdown(elem_id="settings-result")

    numbers = ("preview_every", "model_cache_size", "model_memory_budget_mb", "max_pixels", "max_output_pixels",
               "max_video_pixels")

    def apply(every, save_all, fmt, default_name, vae_name, cache_method, embeddings_on, cache_size, budget_mb, pixels,
              output, video, lora_weight) -> str:
        # Check every value first, so a bad one changes nothing.
        checked_numbers = {}
        for name, value in zip(numbers, (every, cache_size, budget_mb, pixels, output, video)):
            try:
                checked_numbers[name] = s.checked(name, value)
            except ValueError as exc:
                raise gr.Error(f"Not saved: {exc}") from None
        if fmt not in ("png", "jpg", "webp"):
            raise gr.Error(f"Not saved: image_format must be png, jpg or webp (got {fmt!r})")
        try:
            checked = parse(cache_method or "")
            chosen = vae.checked_setting(engine.catalog, vae_name)
            multiplier = lora.checked_multiplier("LoRA weight", lora_weight)
        except InvalidRequest as exc:
            raise gr.Error(f"Not saved: {exc}") from None
        s.sd_vae = chosen
        s.extra_networks_default_multiplier = multiplier
        s.step_cache = text_of(checked) if checked else ""
        s.use_embeddings = bool(embeddings_on)
        for name, value in checked_numbers.items():
            setattr(s, name, value)
        s.default_model = (default_name or "").strip() or None
        s.save_images, s.image_format = bool(save_all), fmt
        manager = engine.models_if_created()
        if manager is not None:
            manager.cache_size = s.model_cache_size
            manager.memory_budget = s.model_memory_budget_mb * 2**20
        s.save(settings_file)
        return "Settings saved."

    save.click(apply, [preview_every, save_images, image_format, default_model, sd_vae, step_cache, use_embeddings, cache,
                       budget, max_pixels, max_output, max_video, lora_weight], result, api_name="apply_settings")

    fields = [preview_every, save_images, image_format, default_model, sd_vae, step_cache, use_embeddings, lora_weight,
              cache, budget, max_pixels, max_output, max_video]

    def saved_values() -> list:
        values = (s.preview_every, s.save_images, s.image_format, s.default_model or "", s.sd_vae, s.step_cache,
                  s.use_embeddings, s.extra_networks_default_multiplier, s.model_cache_size, s.model_memory_budget_mb,
                  s.max_pixels, s.max_output_pixels, s.max_video_pixels)
        return [gr.update(value=value, interactive=True) for value in values]

    app.load(saved_values, None, fields, queue=False, show_progress="hidden")
