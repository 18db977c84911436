"""The front's side: registered job kinds run on Ray Serve replicas, through the engine's dispatcher seam.

The front (the normal Kiri process: UI, /sdapi/v1, /kiri/v1) keeps its one job store and its fair turns;
the store has one thread per replica (`jobs.workers`), so when a replica is free the next owner's turn
goes to it. A turn is one batch, as in one process: a job of several batches (n_iter) sends each as its own
request (n_iter 1, the seed it has in the whole job), and between two of them other owners' turns may take
the replicas. A job made of parts (an SD upscale's tiles, an X/Y grid's cells, a vid2vid clip's frames:
engine.part_work) stays here and sends each part as a turn of its own (part_for). Its spec (plain data, seed and checkpoint resolved here, so a retry makes the same pixels)
goes out with the checkpoint as Serve's multiplexed model id, and the replica's events come back onto the front's Job (progress, previews), so a progress
call shows the job wherever it runs. Interrupt and Skip asked of the front's Job go to the replica by
job id (replica.Control). Pictures come back as PNG bytes and are saved here, into the owner's outputs
(the replicas save nothing), so a replica that dies mid-job leaves no file behind: the job is sent again,
same spec, to another replica, and its pictures are saved once.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from webui.engine.core.errors import InvalidRequest, KiriError
from webui.engine.core.jobs import Job
from webui.engine.core.plain import IMAGE_KEY, dump
from webui.serve_ray.replica import OUT_KEY, PNG_KEY

log = logging.getLogger(__name__)

KEEP = 1000
# The kinds whose request's `model` names the checkpoint (the picker's when empty); a segmentation request's
# names a segmenter (empty: the best for its prompt), and an extension's kinds choose on the replica.
CHECKPOINT_KINDS = ("txt2img", "img2img", "img2img_part", "sd_upscale_tile", "txt2video", "vid2vid")
PROGRESS_FIELDS = ("image_count", "images_done", "step", "steps", "batch_no", "batch_count", "label", "note")


class ReplicaLost(KiriError):
    """The job's replica died each time the job was sent."""


class RemoteJobFailed(KiriError):
    """A job that failed on its replica (the replica's message; `error_type` its exception's class)."""

    def __init__(self, message: str, error_type: str | None = None):
        super().__init__(message)
        self.error_type = error_type


class RayDispatcher:
    """engine.dispatcher for Ray Serve: `work_for(engine, kind, request)` -> (request, work run remotely).

    `handle`: the KiriEngine deployment's handle; `control`: the Control actor; `retries`: how many times a
    job whose replica died is sent again."""

    def __init__(self, handle: Any, control: Any, replicas: int, retries: int = 3) -> None:
        self.handle, self.control, self.replicas, self.retries = handle, control, replicas, retries
        self.where: dict[str, dict] = {}  # job id -> the replica running it (name, pid, loads), while it runs
        self.ran_on: OrderedDict[str, dict] = OrderedDict()  # job id -> the replica that finished it (the last KEEP)
        self.attempts: OrderedDict[str, int] = OrderedDict()  # job id -> times it was sent (the last KEEP)
        self.remote: dict[str, str] = {}  # job id -> the id its running request has on the replicas
        self.parts: OrderedDict[str, int] = OrderedDict()  # job id -> parts sent so far (engine.part_work)

    def install(self, engine: Any) -> None:
        engine.dispatcher = self
        engine.jobs.workers = self.replicas

    def work_for(self, engine: Any, kind: str, request: Any) -> tuple[Any, Any] | None:
        """The remote work of a kind whose result comes back typed (its `result_type`: txt2img and img2img,
        with their hires fix and SD upscale variants); None for the others, which run in this process."""
        registered = engine.job_kinds.get(kind)
        if registered is None or registered.result_type is None:
            return None
        if engine.job_kinds.runs_parts(kind, request):
            return None  # the job stays here and sends its parts (SD upscale: each tile) through part_for
        prepared, plain, save = _outgoing(engine, kind, request)
        batches = plain.get("n_iter", 1) if _saves_here(engine, kind) and isinstance(plain.get("n_iter"), int) else 1

        def work(job: Job):
            """A turn per batch, as in one process: batch i goes out as its own request (n_iter 1, the seed
            it has in the whole job), so between two batches the fair queue may give the replicas to other
            owners' turns, and the job's next batch goes to whichever replica is free."""
            result = None
            for number in range(batches):
                if number and job.interrupted:
                    result.interrupted = True
                    break
                part = plain if batches == 1 else _batch_of(plain, number)
                done = self.run(engine, kind, part, job, _BatchView(number, batches, plain.get("batch_size", 1)))
                if save is not None:
                    _save(engine, kind, job.owner, done, *save)
                result = done if result is None else _merged(result, done)
                if getattr(done, "interrupted", False):
                    break
                if number + 1 < batches:
                    yield  # the next batch is a turn of its own
            return result

        return prepared, work

    def part_for(self, engine: Any, kind: str, request: Any):
        """engine.part_work with replicas: a part of a bigger job (an X/Y grid's cell, an SD upscale's tile, a frame)
        checked here, then sent to a free replica as a turn of its own. Its job keeps running here: it
        places the part's result (a tile into its picture, a cell into its grid) and saves what it makes."""
        _, plain, save = _outgoing(engine, kind, request)  # the front saves what it makes (an X/Y cell), as a job's

        def work(job: Job):
            # a stage's own job (a vid2vid frame's) reports to its parent: progress, Interrupt and the
            # part's id on the replicas are the job's in the store
            root = getattr(job, "parent", None) or job
            parts = self.parts.get(root.id, 0)
            _keep(self.parts, root.id, parts + 1)
            result = self.run(engine, kind, plain, root, _PartView(root), remote=f"{root.id}.p{parts}")
            if save is not None:
                _save(engine, kind, root.owner, result, *save)
            yield  # the job's next part waits for its turn in the fair queue
            return result

        return work

    # --- one job on a replica ------------------------------------------------------------
    def run(self, engine: Any, kind: str, plain: dict, job: Job, view: "_BatchView | None" = None,
            remote: str | None = None) -> Any:
        """The request on a replica, sent again (same spec) while its replica dies; `view`: which batch of its
        job it is, so the job's progress counts the whole job; `remote`: the id it has on the replicas."""
        view = view or _BatchView(0, 1, 1)
        # a replica takes each id once: the batches of a job go out as <job id>.<batch>, its parts <job id>.p<n>
        remote = remote or (job.id if view.batches == 1 else f"{job.id}.{view.number}")
        spec = {"id": remote, "kind": kind, "owner": job.owner, "request": plain}
        self.remote[job.id] = remote
        model_id = _checkpoint_id(engine, plain.get("model"))  # the checkpoint: Serve's multiplexed model id
        try:
            for attempt in range(1, self.retries + 2):
                _keep(self.attempts, job.id, attempt)
                try:
                    return self._attempt(engine, kind, spec, model_id, job, view)
                except KiriError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the replica died (or Serve lost it): send the job again
                    if attempt > self.retries:
                        raise ReplicaLost(f"the replicas running job {job.id} failed {attempt} times: {exc}") from exc
                    log.warning("job %s: its replica failed (%s); sending it again (try %d)", job.id,
                                type(exc).__name__, attempt + 1)
                    job.step, job.images_done = 0, view.images_before
                    time.sleep(0.2 * attempt)
        finally:
            self.where.pop(job.id, None)
            self.remote.pop(job.id, None)

    def _attempt(self, engine: Any, kind: str, spec: dict, model_id: str, job: Job, view: "_BatchView") -> Any:
        handle = self.handle.options(stream=True, multiplexed_model_id=model_id)
        sent: set[str] = set()
        for event in handle.run.remote(spec):
            self.where[job.id] = {k: event.get(k) for k in ("replica", "pid", "loads")}
            self._forward_commands(job, sent)
            name = event.get("event")
            if name in ("started", "progress"):
                view.apply(job, event)
                job._notify()
            elif name == "preview":
                image = _decode(event["image"]["data"])
                if image is not None:
                    job.show_preview(image, event.get("step", 0))
            elif name == "done":
                _keep(self.ran_on, job.id, self.where[job.id])
                view.apply(job, event)
                return _load_result(engine, kind, event.get("result"))
            elif name == "failed":
                message = event.get("error") or "the job failed on its replica"
                if event.get("error_type") == "InvalidRequest":
                    raise InvalidRequest(event.get("error_field") or "request", message)
                raise RemoteJobFailed(message, event.get("error_type"))
        raise RuntimeError(f"the replica's stream of job {job.id} ended without its result")

    def _forward_commands(self, job: Job, sent: set[str]) -> None:
        remote = self.remote.get(job.id, job.id)
        if job.interrupt_requested and "interrupt" not in sent:
            sent.add("interrupt")
            self.control.send.remote(remote, "interrupt")
        if job.take_skip():
            self.control.send.remote(remote, "skip")

    def watch(self, engine: Any, every_s: float = 0.1) -> None:
        """Forward Interrupt/Skip of running jobs even between their events (a long step)."""
        def loop() -> None:
            forwarded: dict[str, set[str]] = {}
            while True:
                time.sleep(every_s)
                for job in engine.jobs.active():
                    if job.id in self.where:
                        self._forward_commands(job, forwarded.setdefault(job.id, set()))
                for job_id in [i for i in forwarded if i not in self.where]:
                    forwarded.pop(job_id)

        threading.Thread(target=loop, name="kiri-ray-commands", daemon=True).start()


class _BatchView:
    """Batch `number` (0-based) of a job of `batches` batches of `size` images: a replica's progress on that
    one batch, as the whole job's (batch i of n, images done counting the earlier batches)."""

    def __init__(self, number: int, batches: int, size: Any) -> None:
        self.number, self.batches = number, batches
        self.size = size if isinstance(size, int) and size > 0 else 1
        self.images_before = number * self.size

    def apply(self, job: Job, event: dict) -> None:
        for field in PROGRESS_FIELDS:
            if field in event:
                setattr(job, field, event[field])
        if self.batches > 1:
            job.batch_no, job.batch_count = self.number + 1, self.batches
            job.image_count = self.batches * self.size
            job.images_done = self.images_before + int(event.get("images_done") or 0)


class _PartView(_BatchView):
    """A part of a job (a tile, a cell): the replica's steps shown on the job; the job's own label and
    counts (tile 3/9, cell 2/6) stay as the job's work sets them here."""

    def __init__(self, job: Job) -> None:
        super().__init__(0, 1, 1)
        self.images_before = job.images_done

    def apply(self, job: Job, event: dict) -> None:
        for field in ("step", "steps"):
            if field in event:
                setattr(job, field, event[field])


def _batch_of(plain: dict, number: int) -> dict:
    """Batch `number` of a request as a request of its own: one batch, the seed its first image has in the
    whole request (the runner's seeds: seed + (batch - 1) * batch_size + i), so its pictures are those."""
    size = plain.get("batch_size", 1) or 1
    return {**plain, "n_iter": 1, "seed": (int(plain["seed"]) + number * int(size)) % 2**32}


def _merged(into: Any, more: Any) -> Any:
    """The pictures of a later batch's result after the earlier ones' (warnings once each)."""
    for name in ("images", "infotexts", "seeds", "paths"):
        mine, theirs = getattr(into, name, None), getattr(more, name, None)
        if isinstance(mine, list) and isinstance(theirs, list):
            mine.extend(theirs)
    warnings = getattr(into, "warnings", None)
    if isinstance(warnings, list):
        warnings.extend(w for w in getattr(more, "warnings", []) or [] if w not in warnings)
    if getattr(more, "interrupted", False):
        into.interrupted = True
    return into


def _outgoing(engine: Any, kind: str, request: Any) -> tuple[Any, dict, tuple[str] | None]:
    """(the prepared request, the plain data a replica gets, the image format the front saves its pictures in
    or None): the request checked here, in the caller's thread (a bad one is refused before it is queued),
    dumped before the kind's prepare (the replica prepares it again from the same data), a file in it (a
    video's clip) as base64 text, its seed and checkpoint fixed and its saving taken over (_resolve)."""
    plain = dump(request)
    plain = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in plain.items()}
    prepared, _ = engine.job_kinds.work_for(engine, kind, request)
    save = _resolve(engine, plain, _saves_here(engine, kind), kind in CHECKPOINT_KINDS)
    return prepared, plain, save


def _checkpoint_id(engine: Any, model: Any) -> str:
    """A request's `model` when it names a checkpoint (or video model) the replica loads for it; "" for a
    segmenter's name or none (Serve then routes by load alone)."""
    if not isinstance(model, str) or not model:
        return ""
    entry = engine.catalog.find(model)
    return model if entry is not None and entry.kind in ("checkpoint", "video") else ""


def _keep(records: OrderedDict, key: str, value: Any) -> None:
    records[key] = value
    records.move_to_end(key)
    while len(records) > KEEP:
        records.popitem(last=False)


def _saves_here(engine: Any, kind: str) -> bool:
    """Whether the front saves the kind's pictures: its result has images, infotexts and seeds."""
    import dataclasses

    result_type = engine.job_kinds.get(kind).result_type
    if result_type is None or not dataclasses.is_dataclass(result_type):
        return False
    return {"images", "infotexts", "seeds", "paths"} <= {f.name for f in dataclasses.fields(result_type)}


def _resolve(engine: Any, plain: dict, saves_here: bool, checkpoint: bool = True) -> tuple[str] | None:
    """Fix what a replica would choose for itself, so every try makes the same pictures: the seed, the
    checkpoint (`checkpoint`: the kind's `model` names one, the picker's when empty); and take saving over
    where the front saves the kind's pictures: (the image format) when they are to be saved here, else None."""
    if plain.get("seed") == -1:
        from webui.engine.generation.requests import random_seed

        plain["seed"] = random_seed()
    if checkpoint and "model" in plain and not plain["model"]:
        entry = engine.current_entry()
        if entry is not None:
            plain["model"] = entry.name
    if not saves_here or "save_images" not in plain:
        return None
    save = engine.settings.save_images if plain["save_images"] is None else plain["save_images"]
    plain["save_images"] = False
    return (plain.get("image_format") or engine.settings.image_format,) if save else None


def _save(engine: Any, kind: str, owner: str, result: Any, image_format: str) -> None:
    """The pictures of a result (images, infotexts, seeds) saved in the owner's outputs, as the runner does."""
    from webui.engine.core.outputs import dated_dir, save_image

    images, infotexts, seeds = (getattr(result, name, None) for name in ("images", "infotexts", "seeds"))
    if not images or infotexts is None or seeds is None:
        return
    folder = dated_dir(engine.outputs_for(owner), kind)
    result.paths = [save_image(image, folder, info, seed, image_format)
                    for image, info, seed in zip(images, infotexts, seeds)]


def _load_result(engine: Any, kind: str, record: Any) -> Any:
    """The replica's plain result (PNG bytes) as the kind's result class, as the engine reads one from disk."""
    from webui.engine.core.plain import load

    plain = _outputs_written(_bytes_as_images(record), Path(engine.settings.outputs_dir))
    registered = engine.job_kinds.get(kind)
    if registered is None or registered.result_type is None:
        return plain
    return load(registered.result_type, plain, engine.settings.max_output_pixels)


def _outputs_written(value: Any, root: Path) -> Any:
    """The files a replica's job wrote under its outputs (replica._outputs_as_bytes), written at the same
    place under this front's outputs (whole: temp file, then renamed; left as they are where they are
    already, as on one machine whose replicas share the outputs folder), as their paths here."""
    if isinstance(value, dict):
        if OUT_KEY in value and set(value) <= {OUT_KEY, "data"}:
            target = (root / value[OUT_KEY]).resolve()
            if not target.is_relative_to(root.resolve()):
                raise RuntimeError(f"a replica sent a file outside the outputs: {value[OUT_KEY]!r}")
            if "data" not in value:
                target.mkdir(parents=True, exist_ok=True)
            elif not (target.is_file() and target.read_bytes() == value["data"]):
                from webui.engine.core.results import write_whole

                target.parent.mkdir(parents=True, exist_ok=True)
                write_whole(target, value["data"])
            return str(target)
        return {k: _outputs_written(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_outputs_written(v, root) for v in value]
    return value


def _bytes_as_images(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {PNG_KEY}:
            return {IMAGE_KEY: base64.b64encode(value[PNG_KEY]).decode()}
        return {k: _bytes_as_images(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bytes_as_images(v) for v in value]
    return value


def _decode(data: str) -> Any:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            image.load()
            return image.copy()
    except Exception:  # noqa: BLE001 - a preview that does not decode is skipped
        return None
