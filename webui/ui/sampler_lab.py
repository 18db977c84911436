"""The Sampler lab: compare samplers against a model whose ideal denoiser is known exactly.

A Gaussian mixture stands in for the data; each sampler's samples are compared with the true
distribution (sliced Wasserstein distance) as steps grow. Good samplers fall towards the noise
floor; a broken one (or a broken extension) shows at once.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.errors import InvalidRequest
from webui.engine.samplers.registry import SCHEDULES

from .common import JOB_EVENT, owner_of, user_errors

DEFAULT_PICK = ("Euler", "Euler a", "Heun", "DPM++ 2M", "DDIM", "UniPC", "Flow Euler")
PREDICTIONS = {"Noise (epsilon)": "epsilon", "v-prediction": "v_prediction", "Rectified flow": "flow"}


def parse_steps(text: str) -> list[int]:
    try:
        steps = sorted({int(part) for part in text.replace(" ", "").split(",") if part})
    except ValueError as exc:
        raise InvalidRequest("steps", "steps must be whole numbers separated by commas, e.g. 5, 10, 20") from exc
    if not steps or steps[0] < 1 or steps[-1] > 200:
        raise InvalidRequest("steps", "give step counts between 1 and 200")
    return steps


PLAIN = ("**In short:** this checks which samplers get a clean picture in fewest steps. Each sampler draws "
         "from a test case whose right answer is known; the lower its line, the closer it gets. Pick the one that "
         "is low at the step count you like to use.")


def render(engine: Engine) -> None:
    gr.Markdown(PLAIN, elem_id="lab-plain")
    gr.Markdown(__doc__.split("\n\n", 1)[1].replace("\n", " "))
    names = engine.samplers.names()
    with gr.Row():
        with gr.Column(scale=2):
            picked = gr.CheckboxGroup(names, value=[n for n in DEFAULT_PICK if n in names], label="Samplers")
            kind = gr.Radio(list(PREDICTIONS), value="Noise (epsilon)", label="Model kind")
            schedule = gr.Dropdown(list(SCHEDULES), value="Automatic", label="Schedule type")
            steps = gr.Textbox("5, 10, 20, 50", label="Step counts")
            run = gr.Button("Run the check", variant="primary", elem_id="lab-run")
        with gr.Column(scale=3):
            plot = gr.Image(label="Distance to the true distribution (lower is better)", type="filepath", elem_id="lab-plot")
            table = gr.Markdown(elem_id="lab-table")

    def check(samplers: list[str], kind_label: str, schedule_name: str, steps_text: str, request: gr.Request):
        from webui.engine.samplers.check import check_samplers, render_plot, render_table

        if not samplers:
            raise gr.Error("pick at least one sampler")
        try:
            counts = parse_steps(steps_text or "")
        except InvalidRequest as exc:
            raise gr.Error(str(exc)) from exc
        prediction = PREDICTIONS[kind_label]
        fitting = [n for n in samplers if prediction in engine.samplers.get(n).fits]
        if not fitting:
            raise gr.Error(f"none of the picked samplers fits a {kind_label} model")
        def work(job):
            # A job like any other: it takes turns with generation instead of fighting it for the cores.
            return check_samplers(engine.samplers, fitting, predictions=(prediction,), steps=counts, schedule=schedule_name)
            yield  # noqa: unreachable - a one-turn job

        with user_errors():
            rows = engine.run(owner_of(request), "sampler_check", work)
        out = Path(tempfile.mkdtemp(prefix="kiri-lab-")) / "sampler_check.png"
        render_plot(rows, out)
        skipped = sorted(set(samplers) - set(fitting))
        note = f"\n\nNot shown (they do not fit this model kind): {', '.join(skipped)}." if skipped else ""
        return str(out), render_table(rows) + note

    run.click(check, [picked, kind, schedule, steps], [plot, table], api_name="sampler_check", **JOB_EVENT)
