"""The token counter beside a prompt box, as AUTOMATIC1111 shows it ("12/75"; "80/150" for two chunks).

It counts with the loaded checkpoint's tokenizer, else with the tokenizer of the checkpoint Kiri
would load, read from disk (generation/tokens.py): typing never loads a model. Nothing is shown
while no tokenizer is at hand.
"""

from __future__ import annotations

import gradio as gr

from webui.engine.context import Engine
from webui.engine.generation.tokens import prompt_tokens

# Drawn in the prompt box's bottom right corner (A1111 draws it in a corner too); it takes no room of its own.
STYLE = ("position:relative;z-index:10;height:0;overflow:visible;text-align:right;font-size:0.8em;opacity:0.75;"
         "font-variant-numeric:tabular-nums")
INNER = "position:absolute;right:1.8em;bottom:2.9em;z-index:10;pointer-events:none"


def counter_html(engine: Engine, text: str | None) -> str:
    counted = prompt_tokens(engine, text or "")
    if counted is None:
        return ""
    tokens, room = counted
    over = " color:var(--error-text-color, #c00);" if tokens > room else ""
    return (f'<div class="kiri-token-count" style="{STYLE}"><span style="{INNER};{over}" '
            f'title="tokens / what the chunks hold">{tokens}/{room}</span></div>')


def token_counter(engine: Engine, textbox: gr.Textbox, elem_id: str) -> gr.HTML:
    """A counter under `textbox`, updated as its text changes (typing, pasting, a prompt sent in)."""
    counter = gr.HTML("", elem_id=elem_id, padding=False, container=False, min_height=0)
    textbox.change(lambda text: counter_html(engine, text), textbox, counter, queue=False, show_progress="hidden",
                   api_visibility="private", trigger_mode="always_last")
    return counter
