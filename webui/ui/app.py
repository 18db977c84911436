"""The whole app: the model picker above a tab per capability."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from webui.engine.context import Engine

from . import extensions_tab, img2img, library, model_picker, png_info, sampler_lab, segment, settings, txt2img, upscale, video
from . import pixels, theme
from .send_to import SendTo

TXT2IMG_TAB = "txt2img"
CSS = "#model-status p {margin: 0.5em 0 0 0;} footer {display: none !important;}"
CSS += "\n" + pixels.CSS

# Where results appear, and how a run is followed: the progress is a thin strip under the results
# (stream_job's status line), and an empty output says what will appear there.
CSS += """
.kiri-status progress.kiri-progress {display: block; width: 100%; height: 4px; margin: 2px 0 4px 0;
  border: none; border-radius: 2px; appearance: none; -webkit-appearance: none; background: var(--neutral-200);}
.kiri-status progress.kiri-progress::-webkit-progress-bar {background: var(--neutral-200); border-radius: 2px;}
.kiri-status progress.kiri-progress::-webkit-progress-value {background: var(--color-accent); border-radius: 2px;}
.kiri-status progress.kiri-progress::-moz-progress-bar {background: var(--color-accent);}
.kiri-status p {margin: 0.2em 0;}
.kiri-output .empty::after {content: "Results appear here"; display: block; margin-top: 0.5em;
  font-size: var(--text-md); color: var(--body-text-color-subdued);}
"""

# Wide screens: the visible tab's Generate bar stays in view while the page scrolls. The output
# column spans its row (Gradio rows leave columns at their content's height), so the bar can stick
# to the top of the window along the whole tab. (Gradio's container hides its overflow, which makes
# it a scroll box the bar would stick inside of and scroll away with: see HEAD.)
CSS += """
@media (min-width: 641px) {
  .kiri-output {align-self: stretch !important;}
  .kiri-actions {position: sticky; top: 0; z-index: 50; padding: 6px 0;
    background: var(--background-fill-primary);}
  #xy-actions {align-items: center;}
  #xy-status {min-height: 2.5em;}  /* room for the grid run's progress beside its button */
}
"""

# Phones (390 px): the model row wraps instead of squeezing the status one syllable a line, the
# Refresh button stays small, and the visible tab's Generate bar sits at the foot of the screen.
CSS += """
@media (max-width: 640px) {
  #model-row {flex-wrap: wrap !important; gap: 6px;}
  #model-row > .form, #model-row #model-picker {flex: 1 1 100% !important; min-width: 0 !important;}
  #model-picker input {text-overflow: ellipsis; padding-right: 2em;}
  #model-row #model-refresh {flex: 0 0 auto !important; min-width: 0 !important; width: auto; align-self: center;
    padding: 4px 10px; font-size: var(--text-sm);}
  #model-row #model-status {flex: 1 1 0 !important; min-width: 0 !important; overflow-wrap: anywhere;}
  #model-status p {margin: 0;}
  .kiri-actions {position: fixed; left: 0; right: 0; bottom: 0; z-index: 100; margin: 0; padding: 8px;
    gap: 8px; flex-wrap: nowrap; background: var(--background-fill-primary); box-shadow: 0 -2px 8px rgba(0, 0, 0, 0.15);}
  .kiri-actions > button {min-width: 0 !important;}
  .gradio-container {padding-bottom: 72px !important;}
}
"""

# Ctrl+Enter (Cmd+Enter) runs the visible tab's Generate; Escape presses its Interrupt. Hidden tabs
# are display:none, so the first visible button of the kind is the visible tab's.
# Gradio scopes CSS= under its container, so the container's own overflow is set here: it clips
# instead of hiding, the same picture without a scroll box, so the sticky Generate bar sticks to the
# window.
HEAD = """<style>.gradio-container {overflow: clip !important;}</style>
<script>
(() => {
  const visible = (el) => el.offsetParent !== null && !el.disabled;
  const press = (cls) => {
    const button = [...document.querySelectorAll(cls)].find(visible);
    if (button) button.click();
    return Boolean(button);
  };
  window.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.isComposing) {
      if (press(".kiri-generate")) { event.preventDefault(); event.stopPropagation(); }
    } else if (event.key === "Escape" && !event.ctrlKey && !event.metaKey && !event.altKey) {
      if (document.querySelector("[aria-expanded='true']")) return;  // Escape closes an open list first
      press(".kiri-interrupt");
    }
  }, true);
})();
</script>"""


def build(engine: Engine, settings_file: Path) -> gr.Blocks:
    with gr.Blocks(title="Kiri") as app:
        gr.Markdown('# <span class="kiri-kanji" lang="ja">霧</span> Kiri', elem_id="kiri-title")
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
                to_txt2img = png_info.render(engine, t2i, tabs, TXT2IMG_TAB, send_to=send)
            with gr.Tab("Library", id=library.TAB_ID) as library_tab:
                library.render(engine, library_tab, reproduce=to_txt2img, send_to=send, model_picker=picker,
                               reproduce_img2img=i2i, txt2img_control=t2i.control)
            with gr.Tab("Sampler lab", id="sampler_lab"):
                sampler_lab.render(engine)
            with gr.Tab("Settings", id="settings"):
                settings.render(engine, settings_file, app)
            with gr.Tab("Extensions", id="extensions"):
                extensions_tab.render(engine, settings_file)
            for tab in (engine.extensions.ui_tabs if engine.extensions else []):
                with gr.Tab(tab.title):
                    _render_extension_tab(tab, engine)
        send.wire()
        app.load(None, None, None, js=pixels.JS)
        app.load(None, None, None, js=img2img.BRUSH_JS)
        theme.load(app)
    return app


def _render_extension_tab(tab, engine: Engine) -> None:
    try:
        tab.render(engine)
    except Exception as exc:  # noqa: BLE001 - a broken extension tab must not break the app
        gr.Markdown(f"The extension **{tab.source}** failed to build this tab: `{type(exc).__name__}: {exc}`")
