"""Small pieces the tabs share: the GPU queue id, error translation, the model picker."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Generator, Iterator

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.errors import KiriError
from webui.engine.core.owners import of_login

# Events that run models only submit a job and wait for it: the engine's job store takes the turns
# (per user, one batch at a time), so Gradio must not serialise these events itself.
JOB_EVENT = dict(concurrency_id="kiri-jobs", concurrency_limit=None)


@contextmanager
def user_errors() -> Iterator[None]:
    """Show engine errors meant for users as a Gradio error toast, not a stack trace."""
    try:
        yield
    except KiriError as exc:
        raise gr.Error(str(exc)) from exc


def owner_of(request: gr.Request | None) -> str:
    """Who takes turns and whose jobs Interrupt stops: the login if there is one, else the browser session."""
    user = getattr(request, "username", None)
    if user:
        return of_login(user)
    return getattr(request, "session_hash", None) or "local"


def model_choices(engine: Engine) -> list[str]:
    return [engine.catalog.title(e) for e in engine.catalog.entries]


def selected_title(engine: Engine) -> str | None:
    """The dropdown value: the selected or loaded model, else the one Kiri would load first."""
    try:
        return engine.catalog.title(engine.current_entry())
    except KiriError:
        return None


def stream_job(work: Callable[[], Any], job: Any, progress: Any, show: Callable[[Any], Any],
               tick: Callable[[], Any] | None = None) -> Generator[Any, None, Any]:
    """Run `work` in a helper thread; meanwhile update the progress bar and yield `show(preview)`
    for each new live preview, or `tick()` (if given) when only the step moved on. Returns what
    `work` returned, or raises what it raised."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the handler's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="kiri-ui-job", daemon=True)
    worker.start()
    shown, told = None, None
    while worker.is_alive():
        worker.join(0.25)
        if job.steps:
            progress((job.step, job.steps), desc=job.describe(), unit="steps")
        if job.preview is not None and job.preview is not shown:
            shown, told = job.preview, (job.batch_no, job.step)
            yield show(shown)
        elif tick is not None and job.steps and (job.batch_no, job.step) != told:
            told = (job.batch_no, job.step)
            yield tick()
    if "error" in box:
        raise box["error"]
    return box["result"]


# Outputs of a running job show no Gradio overlay (it covered the live preview most of the time):
# the status line under the results carries a thin progress strip instead.
QUIET_PROGRESS = dict(show_progress="hidden")


def progress_line(job: Any) -> str:
    """The status under the results while a job runs: a thin strip and where the job is."""
    percent = round(100 * job.fraction)
    return f'<progress class="kiri-progress" value="{percent}" max="100"></progress>\n\n{job.describe()}'


def interrupted_at(job: Any) -> str:
    """Where an interrupted job stopped, e.g. "Interrupted at step 7/20" (and the batch, if several)."""
    where = f"step {job.step}/{job.steps}"
    if job.batch_count > 1:
        where += f" of batch {job.batch_no}/{job.batch_count}"
    return f"**Interrupted at {where}**"


def as_image(value: Any):
    """A PIL image from an Image/ImageEditor/Gallery value, or None."""
    from PIL import Image

    from webui.engine.core.errors import InvalidRequest
    from webui.engine.core.images import to_rgb

    if isinstance(value, dict):
        value = value.get("background") or value.get("composite") or value.get("image")
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("path")
    if isinstance(value, str):
        try:
            with Image.open(value) as opened:
                return to_rgb(opened, "init_image")
        except OSError as exc:
            raise InvalidRequest("init_image", f"the file is not an image Kiri can read: {exc}") from exc
    return to_rgb(value, "init_image") if isinstance(value, Image.Image) else None
