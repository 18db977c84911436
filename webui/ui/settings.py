"""The Settings tab: the few options that change how Kiri runs, saved to the settings file."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.errors import InvalidRequest
from webui.engine import vae
from webui.engine.stepcache import METHODS, parse, text_of


def render(engine: Engine, settings_file: Path) -> None:
    s = engine.settings
    gr.Markdown(f"Settings are saved to `{settings_file}`.")
    cache = gr.Slider(1, 8, value=s.model_cache_size, step=1, label="Models kept loaded (LRU cache size)")
    default_model = gr.Textbox(s.default_model or "", label="Model to load at start (empty: Kiri's default)")
    save_images = gr.Checkbox(s.save_images, label="Save every generated image to the outputs folder")
    image_format = gr.Radio(["png", "jpg", "webp"], value=s.image_format, label="Image format")
    step_cache = gr.Dropdown([("Off", ""), *[(m.label, text_of(parse(m.name))) for m in METHODS.values()]],
                             value=s.step_cache, allow_custom_value=True, elem_id="settings-step-cache",
                             label="Step cache for requests that name none (method and parameters, e.g. taylorseer 5 warmup=3)")
    sd_vae = gr.Dropdown(vae.choices(engine.catalog), value=s.sd_vae, allow_custom_value=True, elem_id="settings-sd-vae",
                         label="VAE for requests that name none (Automatic: one named like the checkpoint, else its own)")
    save = gr.Button("Apply settings", variant="primary")
    result = gr.Markdown()

    def apply(cache_size, default_name, save_all, fmt, cache_method, vae_name) -> str:
        try:
            checked = parse(cache_method or "")
            chosen = vae.checked_setting(engine.catalog, vae_name)
        except InvalidRequest as exc:
            return f"Not saved: {exc}"
        s.sd_vae = chosen
        s.step_cache = text_of(checked) if checked else ""
        s.model_cache_size = int(cache_size)
        s.default_model = (default_name or "").strip() or None
        s.save_images, s.image_format = bool(save_all), fmt
        manager = engine.models_if_created()
        if manager is not None:
            manager.cache_size = s.model_cache_size
        s.save(settings_file)
        return "Settings saved."

    save.click(apply, [cache, default_model, save_images, image_format, step_cache, sd_vae], result, api_name="apply_settings")
