"""Saved styles under a tab's prompt (A1111's Styles dropdown): pick several, apply them into the prompt
text (A1111's 📋, here "Apply"), save the prompts as a new style, delete one. The tab hands `picker.dropdown` to its run
handler as the request's `styles`; the engine merges them (webui/engine/styles/)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.errors import KiriError
from webui.engine.styles import apply_styles, delete_style, extract_styles, find_styles, load_styles, save_style

from .common import user_errors
from .theme import REFRESH


@dataclass
class StylesPicker:
    dropdown: gr.Dropdown


def _names(engine: Engine) -> list[str]:
    try:
        return list(load_styles(engine.settings))
    except KiriError:
        return []


def render(engine: Engine, prefix: str, prompt: gr.Textbox, negative: gr.Textbox) -> StylesPicker:
    """The dropdown and its buttons, below the prompts of the tab `prefix` (txt2img, img2img)."""
    with gr.Row(equal_height=True, elem_classes=["kiri-styles"]):
        dropdown = gr.Dropdown(_names(engine), value=[], multiselect=True, label="Styles", scale=6,
                               elem_id=f"{prefix}-styles", info="merged into the prompts when you generate")
        refresh = gr.Button(REFRESH, size="sm", min_width=40, scale=0, elem_id=f"{prefix}-styles-refresh")
        apply = gr.Button("Apply", size="sm", min_width=80, scale=0, elem_id=f"{prefix}-styles-apply")
    with gr.Accordion("Save or delete a style", open=False, elem_id=f"{prefix}-styles-edit"):
        with gr.Row(equal_height=True):
            name = gr.Textbox(label="Style name", scale=4, elem_id=f"{prefix}-style-name",
                              placeholder="saves the prompt and negative prompt above as this style")
            save = gr.Button("Save", size="sm", scale=1, elem_id=f"{prefix}-style-save")
            delete = gr.Button("Delete", size="sm", scale=1, elem_id=f"{prefix}-style-delete")

    def apply_into_prompts(text: str, negative_text: str, selected: list[str] | None):
        """A1111's 📋: the selected styles written into the prompt boxes, and the selection cleared."""
        with user_errors():
            styled = apply_styles(text or "", negative_text or "", find_styles(engine.settings, list(selected or [])))
        return *styled, gr.update(value=[])

    def save_current(style_name: str, text: str, negative_text: str, selected: list[str] | None):
        with user_errors():
            style = save_style(engine.settings, style_name, text or "", negative_text or "")
        gr.Info(f"Saved the style {style.name!r}.")
        return gr.update(choices=_names(engine), value=list(selected or []))

    def delete_named(style_name: str, selected: list[str] | None):
        style_name = (style_name or "").strip()
        with user_errors():
            delete_style(engine.settings, style_name)
        gr.Info(f"Deleted the style {style_name!r}.")
        names = _names(engine)
        return gr.update(choices=names, value=[s for s in selected or [] if s in names])

    def refreshed(selected: list[str] | None):
        names = _names(engine)
        return gr.update(choices=names, value=[s for s in selected or [] if s in names])

    private = dict(api_visibility="private", queue=False)
    apply.click(apply_into_prompts, [prompt, negative, dropdown], [prompt, negative, dropdown], **private)
    save.click(save_current, [name, prompt, negative, dropdown], dropdown, **private)
    delete.click(delete_named, [name, dropdown], dropdown, **private)
    refresh.click(refreshed, dropdown, dropdown, **private)
    return StylesPicker(dropdown)


def restore(engine: Engine, prompt: str, negative: str) -> tuple[str, str, list[str]]:
    """An infotext's prompts without the saved styles they hold, and those styles' names (A1111 reads
    pasted parameters so: "send to" then generate does not apply a style twice)."""
    try:
        names, prompt, negative = extract_styles(load_styles(engine.settings), prompt, negative)
    except KiriError:
        return prompt, negative, []
    return prompt, negative, names
