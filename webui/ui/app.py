"""The whole app: the model picker above a tab per capability."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from webui.engine.context import Engine

from . import extensions_tab, img2img, model_picker, png_info, sampler_lab, segment, settings, txt2img, upscale, video
from . import pixels, theme
from .send_to import SendTo

TXT2IMG_TAB = "txt2img"
CSS = "#model-status p {margin: 0.5em 0 0 0;} footer {display: none !important;}"
CSS += "\n" + pixels.CSS


def build(engine: Engine, settings_file: Path) -> gr.Blocks:
    with gr.Blocks(title="Kiri") as app:
        gr.Markdown("# 霧 Kiri", elem_id="kiri-title")
        theme.toggle_button()
        picker = model_picker.render(engine)
        with gr.Tabs() as tabs:
            send = SendTo(engine, tabs)  # every output's "Send to" menu; wired once every tab exists
            with gr.Tab("Text to image", id=TXT2IMG_TAB):
                t2i = txt2img.render(engine, picker, send=send)
            with gr.Tab("Image to image / Inpaint", id=img2img.TAB_ID):
                i2i = img2img.render(engine, picker, t2i, tabs, send=send)
            with gr.Tab("Super-resolution", id=upscale.TAB_ID):
                upscale.render(engine, send=send)
            with gr.Tab("Video frames", id="video"):
                video.render(engine, send=send)
            with gr.Tab("Segmentation", id="segment"):
                segment.render(engine, i2i, tabs, send_to=send)
            with gr.Tab("PNG info", id="png_info"):
                png_info.render(engine, t2i, tabs, TXT2IMG_TAB, send_to=send)
            with gr.Tab("Sampler lab", id="sampler_lab"):
                sampler_lab.render(engine)
            with gr.Tab("Settings", id="settings"):
                settings.render(engine, settings_file)
            with gr.Tab("Extensions", id="extensions"):
                extensions_tab.render(engine, settings_file)
            for tab in (engine.extensions.ui_tabs if engine.extensions else []):
                with gr.Tab(tab.title):
                    _render_extension_tab(tab, engine)
        send.wire()
        app.load(None, None, None, js=pixels.JS)
        theme.load(app)
    return app


def _render_extension_tab(tab, engine: Engine) -> None:
    try:
        tab.render(engine)
    except Exception as exc:  # noqa: BLE001 - a broken extension tab must not break the app
        gr.Markdown(f"The extension **{tab.source}** failed to build this tab: `{type(exc).__name__}: {exc}`")
