"""Finished jobs' results on disk, as plain data, so the job store keeps none of them in memory.

When a job of a plain-data kind finishes, its result is written to
`outputs/<owner's folder>/.jobs/<id>/result.json` (core/owners.py keeps it per login): plain data
(core/plain.py), each picture a file reference `{"__file__": "/abs/path.png"}`. A picture the job
saved to the outputs as PNG is referenced where it lies; any other (the request did not save, or
saved a lossy JPEG/WebP) is written next to the record as `00000.png`, so the pixels read back are
the ones the job made. Every file is written whole (temp file, then rename). The newest
KEEP_FINISHED records of each owner stay; the job store removes a record when it forgets the job.

A result says which of its pictures are saved files with `saved_images()` -> [(image, path)]
(GenerationResult does); the archive knows no capability.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from webui.engine.core.plain import IMAGE_KEY, dump

__all__ = ["ResultArchive", "FILE_KEY", "inline_files", "write_whole"]

FILE_KEY = "__file__"
RECORD = "result.json"
JOBS_FOLDER = ".jobs"


class ResultArchive:
    """`root_for(owner)` -> that owner's outputs folder; `wants(job)` -> whether a job's result is kept."""

    def __init__(self, root_for: Callable[[str], Path], keep: int, wants: Callable[[Any], bool] = lambda job: True) -> None:
        self.root_for, self.keep, self.wants = root_for, keep, wants

    def folder(self, job: Any) -> Path:
        return Path(self.root_for(job.owner)) / JOBS_FOLDER / job.id

    def write(self, job: Any, result: Any) -> tuple[Path, Any]:
        """(the record's path, the record); a result that is not plain data raises TypeError (nothing is left)."""
        folder = self.folder(job)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            record = dump(result, image=self._image_ref(folder, result))
            path = folder / RECORD
            write_whole(path, json.dumps(record).encode())
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._prune(folder.parent)
        return path, record

    def read(self, job: Any) -> Any:
        """The record written for `job`; FileNotFoundError once it was removed."""
        return json.loads((self.folder(job) / RECORD).read_text())

    def remove(self, job: Any) -> None:
        shutil.rmtree(self.folder(job), ignore_errors=True)

    def _image_ref(self, folder: Path, result: Any) -> Callable[[Any], dict]:
        saved = {}
        for image, path in (getattr(result, "saved_images", lambda: [])() or []):
            if path is not None and Path(path).suffix.lower() == ".png":
                saved[id(image)] = Path(path)
        numbers = itertools.count()

        def ref(image: Any) -> dict:
            path = saved.get(id(image))
            if path is None or not path.is_file():
                buffer = _png(image)
                path = folder / f"{next(numbers):05d}.png"
                write_whole(path, buffer)
            return {FILE_KEY: str(path.absolute())}

        return ref

    def _prune(self, jobs_dir: Path) -> None:
        """Keep the newest `keep` records of this owner (older runs' records included)."""
        try:
            folders = [p for p in jobs_dir.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return
        if len(folders) <= self.keep:
            return
        folders.sort(key=_mtime, reverse=True)
        for old in folders[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)


def inline_files(record: Any) -> Any:
    """The record with each file reference replaced by {"__image__": base64 of the file} (the shape
    GET /kiri/v1/jobs/{id} has always answered); a file removed since becomes None."""
    if isinstance(record, dict):
        if set(record) == {FILE_KEY}:
            try:
                return {IMAGE_KEY: base64.b64encode(Path(record[FILE_KEY]).read_bytes()).decode()}
            except OSError:
                return None
        return {k: inline_files(v) for k, v in record.items()}
    if isinstance(record, list):
        return [inline_files(v) for v in record]
    return record


def write_whole(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, then rename: no reader sees half a file."""
    fd, temp = tempfile.mkstemp(prefix=".kiri-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def _png(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
