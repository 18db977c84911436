"""The checkpoint dropdown above the tabs: pick, load, refresh."""

from __future__ import annotations

import gradio as gr

from webui.engine.context import Engine

from .common import JOB_EVENT, model_choices, owner_of, selected_title, user_errors

NO_MODEL_HELP = (
    "**No checkpoint found.** Put a diffusers folder or a `.safetensors` file in "
    "`{dir}` (see `models/README.md`), then press Refresh."
)


def render(engine: Engine) -> gr.Dropdown:
    with gr.Row(equal_height=True, elem_id="model-row"):
        dropdown = gr.Dropdown(
            choices=model_choices(engine), value=selected_title(engine), label="Checkpoint",
            scale=6, elem_id="model-picker",
        )
        refresh = gr.Button("Refresh", scale=0, min_width=80, elem_id="model-refresh")
        status = gr.Markdown(lambda: _status(engine), elem_id="model-status")  # read again at each page load

    def load(title: str | None, request: gr.Request, progress: gr.Progress = gr.Progress()) -> str:
        if not title:
            return _status(engine)
        progress(0, desc=f"Loading {title.split(' · ')[0]}")
        with user_errors():
            loaded = engine.load_model(title, owner_of(request))
        return f"Loaded **{loaded.name}** ({loaded.entry.kind_label}, {loaded.device})"

    def rescan() -> tuple[dict, str]:
        engine.catalog.scan()
        return gr.update(choices=model_choices(engine), value=selected_title(engine)), _status(engine)

    # A page opened while a model loads (the first one, at start-up) would say "Loading" for good:
    # poll until the load is over, then stop.
    watch = gr.Timer(1.0, active=True)

    def poll() -> tuple[str, gr.Timer]:
        text = _status(engine)
        return text, gr.Timer(active=text.startswith("Loading"))

    watch.tick(poll, None, [status, watch], api_visibility="private", queue=False)
    dropdown.input(load, dropdown, status, api_name="load_model", **JOB_EVENT)
    refresh.click(rescan, None, [dropdown, status], api_name="refresh_models")
    return dropdown


def _status(engine: Engine) -> str:
    if not engine.catalog.entries:
        return NO_MODEL_HELP.format(dir=engine.catalog.checkpoints_dir)
    models = engine.models_if_created()  # creating the manager here would import torch before the page is up
    if models is not None and models.loading is not None:
        return f"Loading **{models.loading.name}**…"
    if models is not None and models.current is not None:
        return f"Loaded **{models.current.name}** ({models.current.entry.kind_label}, {models.current.device})"
    return "Models load on first use."
