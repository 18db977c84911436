"""The Library: every picture and clip in the outputs folder (and read-only `--library-dir` folders),
searchable by prompt, model, sampler, LoRA, size and date, private to each login, reproducible.

    library = open_library(settings)          one per outputs folder, shared by the UI and the API
    library.search(viewer, q=..., model=...)  a page, newest first, and the cursor of the next
    library.search(viewer, similar_to=id)     ... those most like that picture first (colours, layout)
    library.item(viewer, id)                  one picture's row (its infotext, file, favourite)
    library.delete / restore / empty_trash    delete moves to outputs/.trash, restorable
    library.reproduce(viewer, id)             the /sdapi/v1 request body that makes it again
    library.thumbnail(viewer, id)             a WebP thumbnail, made once and cached on disk

Owner rules are core/owners.py's: with logins a picture belongs to the login whose folder
(`outputs/<login>/`) holds it; a login sees only those, an admin and a server without logins see all.
`--library-dir` folders are the server owner's: only a viewer who sees all sees them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.infotext import infotext_to_request_fields, parse_infotext
from webui.engine.core.owners import Viewer, login_folder

from . import _looks
from ._index import LOOKS_JOIN, Index, ScanReport, when
from ._meta import Meta, read_meta

__all__ = ["Library", "Meta", "NotFound", "ScanReport", "open_library", "read_meta", "reproduce_body", "register"]

log = logging.getLogger(__name__)

PAGE = 60
MAX_PAGE = 500
THUMB = 256
FOLDER = ".library"
TRASH = ".trash"
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TOKEN = re.compile(r'"[^"]*"|\S+')
_TRASH_NAME = re.compile(r"^\d+-\d+-[^/\\\0]{1,255}$")


class NotFound(InvalidRequest):
    """No such picture, or not this viewer's (the same answer either way: nothing leaks)."""


def register(registries) -> None:  # noqa: ARG001 - the Library adds no job kind or add-on; it reads the files
    """Nothing to register: pictures are found by scanning (files are the source of truth)."""


_LIBRARIES: dict[tuple, "Library"] = {}
_LIBRARIES_LOCK = threading.Lock()


def open_library(settings, start: bool = True) -> "Library":
    """The Library of these settings' outputs folder (and library dirs): one per folder in this process."""
    roots = [Path(settings.outputs_dir).resolve(), *(Path(d).resolve() for d in getattr(settings, "library_dirs", []) or [])]
    key = tuple(str(r) for r in roots)
    with _LIBRARIES_LOCK:
        library = _LIBRARIES.get(key)
        if library is None:
            library = _LIBRARIES[key] = Library(roots, max_pixels=getattr(settings, "max_pixels", 4096 * 4096))
            if start:
                library.start()
        return library


class Library:
    def __init__(self, roots: list[Path], max_pixels: int = 4096 * 4096, rescan_after: float = 0.5):
        self.outputs = Path(roots[0]).resolve()
        self.roots = [Path(r).resolve() for r in roots]
        self.index = Index(self.outputs / FOLDER / "index.sqlite3", self.roots)
        self.max_pixels, self.rescan_after = max_pixels, rescan_after
        self.admins: set[str] = set()  # the server's --admin logins (set by the server; the UI asks by login)
        self.last_scan: ScanReport | None = None
        self.progress: str = ""
        self._scanned_at = 0.0
        self._scanning = threading.Lock()

    # --- scanning ---------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        """The scan at start, in the background: new, changed and deleted files; a progress line meanwhile."""
        def scan_then_look() -> None:
            self.refresh(force=True)
            try:  # thumbnails and looks of every picture, for the grid and the "most like" order
                _looks.fill_missing(self)
            except sqlite3.Error as exc:
                log.warning("library: taking looks failed: %s", exc)

        thread = threading.Thread(target=scan_then_look, name="kiri-library-scan", daemon=True)
        thread.start()
        return thread

    def refresh(self, force: bool = False, wait: float = 0.5) -> ScanReport | None:
        """Scan: `force` a full one; else a quick one (only changed folders read; new outputs are found this
        way, whichever tab or route wrote them) unless one ran in the last `rescan_after` seconds and no
        folder it read has changed since (a picture saved just now is listed at once). While a
        long scan runs, wait at most `wait` seconds, then the page shows what is indexed so far."""
        if not force and time.monotonic() - self._scanned_at < self.rescan_after and not self.index.folders_changed():
            return None
        if not self._scanning.acquire(timeout=wait) if wait > 0 else not self._scanning.acquire(blocking=False):
            return None
        try:
            def progress(report: ScanReport) -> None:
                self.progress = f"Reading the library: {report.read:,} new pictures so far…"

            report = self.index.scan(progress, quick=not force and self.last_scan is not None)
            for note in report.skipped[:20]:
                log.info("library: skipped %s", note)
            self.last_scan, self.progress, self._scanned_at = report, "", time.monotonic()
            return report
        except sqlite3.Error as exc:
            log.warning("library scan failed: %s", exc)
            self.progress = ""
            return None
        finally:
            self._scanning.release()

    # --- who sees what ------------------------------------------------------------------------
    def viewer(self, login: str | None, owner: str = "local") -> Viewer:
        return Viewer(owner, login, login is not None and login in self.admins)

    def _scope(self, viewer: Viewer) -> tuple[list[str], list[Any]]:
        if viewer.sees_all:
            return [], []
        return ["f.root = 0", "f.top = ?"], [login_folder(viewer.login)]

    def _visible(self, viewer: Viewer, row: dict | None) -> dict:
        if row is None or not (viewer.sees_all or (row["root"] == 0 and row["top"] == login_folder(viewer.login))):
            raise NotFound("id", "no such picture in your library")
        if not os.path.exists(row["path"]):
            self.index.forget(row["path"])
            raise NotFound("id", "that picture's file is gone")
        return row

    # --- searching ----------------------------------------------------------------------------
    def search(self, viewer: Viewer, q: str = "", tab: str = "", model: str = "", sampler: str = "", lora: str = "",
               size: str = "", date_from: str = "", date_to: str = "", favourite: bool = False, cursor: str = "",
               limit: int = PAGE, refresh: bool = True, similar_to: int | None = None) -> dict:
        """A page of the viewer's pictures, newest first: {"items", "next" (cursor or None), "progress"}.
        `similar_to` (a picture's id): those that look most like it first (colours and layout; _looks.py)."""
        for name, value in (("q", q), ("tab", tab), ("model", model), ("sampler", sampler), ("lora", lora), ("size", size),
                            ("date_from", date_from), ("date_to", date_to), ("cursor", cursor)):
            _check_text(name, value)
        if refresh:
            self.refresh()
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest("limit", f"limit must be 1 to {MAX_PAGE}")
        where, args = self._scope(viewer)
        for column, value in (("tab", tab), ("model", model), ("sampler", sampler)):
            if value:
                where.append(f"f.{column} = ?" if column != "model" else "(f.model = ? OR f.model LIKE ?)")
                args += [value] if column != "model" else [value, value + ".%"]
        if lora:
            where.append("(' ' || f.networks || ' ') LIKE ?")
            args.append(f"% {lora.strip()} %")
        if size:
            found = _SIZE.match(size.strip())
            if not found:
                raise InvalidRequest("size", "size is WIDTHxHEIGHT, e.g. 512x768")
            where += ["f.width = ?", "f.height = ?"]
            args += [int(found.group(1)), int(found.group(2))]
        for name, value, end in (("date_from", date_from, False), ("date_to", date_to, True)):
            if value:
                if not _DATE.match(value):
                    raise InvalidRequest(name, f"{name} is a date as YYYY-MM-DD (got {value[:40]!r})")
                try:
                    stamp = when(value, end)
                except ValueError:
                    raise InvalidRequest(name, f"{value!r} is not a date") from None
                where.append("f.mtime < ?" if end else "f.mtime >= ?")
                args.append(stamp)
        if favourite:
            where.append("fav.path IS NOT NULL")
        if similar_to is not None:
            return self._similar(viewer, similar_to, q, where, args, cursor, limit)
        if cursor:
            mtime, item_id = _read_cursor(cursor)
            where.append("(f.mtime < ? OR (f.mtime = ? AND f.id < ?))")
            args += [mtime, mtime, item_id]
        rows = self._match(q, where, args, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _make_cursor(rows[-1]) if more and rows else None
        return {"items": [self.summary(r) for r in rows], "next": next_cursor, "progress": self.progress}

    def _similar(self, viewer: Viewer, similar_to: Any, q: str, where: list[str], args: list[Any], cursor: str,
                 limit: int) -> dict:
        """The search's pictures, most like picture `similar_to` first; the cursor is an offset in that order."""
        if isinstance(similar_to, bool) or not isinstance(similar_to, int):
            raise InvalidRequest("similar_to", "similar_to is a picture's id (a whole number)")
        reference = self._visible(viewer, self.index.get(similar_to))
        if reference["kind"] != "picture":
            raise InvalidRequest("similar_to", "a clip cannot be compared; pick a picture")
        start = 0
        if cursor:
            if not cursor.startswith("~") or not cursor[1:].isdigit():
                raise InvalidRequest("cursor", "not a cursor this server gave (use the `next` of the previous page)")
            start = int(cursor[1:])
        def candidates() -> list[dict]:  # each with its current look (l.v), in one query
            return self._match(q, where + ["f.kind = 'picture'"], args, None, columns="f.id, l.v", join=LOOKS_JOIN)

        ordered, waiting = _looks.rank(self, reference, candidates)
        page_ids = ordered[start:start + limit]
        rows = [row for row in (self.index.get(i) for i in page_ids) if row is not None]
        more = start + limit < len(ordered)
        progress = self.progress or (f"{waiting:,} pictures not compared yet (their thumbnails are being made); "
                                     "search again in a moment" if waiting else "")
        return {"items": [self.summary(r) for r in rows], "next": f"~{start + limit}" if more else None,
                "progress": progress}

    def _match(self, q: str, where: list[str], args: list[Any], limit: int | None, columns: str | None = None,
               join: str = "") -> list[dict]:
        """Rows for an FTS5 query; a query FTS5 cannot parse is read again as plain words (each quoted), and
        only a query that fails even so is refused, naming the field: a search string is data."""
        q = (q or "").strip()
        if len(q) > 1000:
            raise InvalidRequest("q", "the search is longer than 1,000 characters")
        extra = {"columns": columns, "join": join} if columns else {}
        if not q:
            return self.index.query(where, args, None, limit, **extra)
        try:
            return self.index.query(where, args, q, limit, **extra)
        except sqlite3.OperationalError:
            pass
        words = " ".join('"' + token.strip('"').replace('"', '""') + '"' for token in _TOKEN.findall(q) if token.strip('"'))
        if not words:
            return []
        try:
            return self.index.query(where, args, words, limit, **extra)
        except sqlite3.OperationalError as exc:
            raise InvalidRequest("q", f"this search cannot be read ({exc}); use words, \"a phrase\", AND, OR, NOT") from None

    def choices(self, viewer: Viewer) -> dict[str, list[str]]:
        """The values the filters can take for this viewer (tabs, models, samplers)."""
        where, args = self._scope(viewer)
        return {c: self.index.distinct(c, where, args) for c in ("tab", "model", "sampler")}

    def summary(self, row: dict) -> dict:
        return {"id": row["id"], "tab": row["tab"], "kind": row["kind"], "width": row["width"], "height": row["height"],
                "created": row["mtime"], "prompt": (row["prompt"] or "")[:300], "model": row["model"] or "",
                "sampler": row["sampler"] or "", "seed": row["seed"], "loras": (row["networks"] or "").split(),
                "favourite": bool(row["favourite"]), "format": row["source"], "size_bytes": row["size"],
                "read_only": row["root"] != 0, "name": os.path.basename(row["path"])}

    def item(self, viewer: Viewer, item_id: int) -> dict:
        """One picture: its summary, full prompts and infotext, parsed parameters, and the file's path."""
        row = self._visible(viewer, self.index.get(int(item_id)))
        parsed = parse_infotext(row["infotext"] or "")
        return {**self.summary(row), "prompt": row["prompt"] or "", "negative_prompt": row["negative"] or "",
                "infotext": row["infotext"] or "", "parameters": parsed.params, "note": row["note"] or "",
                "path": row["path"]}

    # --- changing -------------------------------------------------------------------------------
    def favourite(self, viewer: Viewer, item_id: int, on: bool = True) -> dict:
        row = self._visible(viewer, self.index.get(int(item_id)))
        self.index.set_favourite(row["path"], on)
        return {"id": row["id"], "favourite": on}

    def delete(self, viewer: Viewer, item_id: int) -> dict:
        """Move the file to outputs/.trash (restorable until the trash is emptied)."""
        row = self._visible(viewer, self.index.get(int(item_id)))
        if row["root"] != 0:
            raise InvalidRequest("id", "this picture is in a read-only library folder; delete it there")
        trash = self.outputs / TRASH
        trash.mkdir(parents=True, exist_ok=True)
        name = f"{int(time.time() * 1000)}-{row['id']}-{os.path.basename(row['path'])}"
        os.replace(row["path"], trash / name)
        record = {"original": row["path"], "top": row["top"], "deleted": time.time()}
        (trash / (name + ".json")).write_text(json.dumps(record))
        self.index.forget(row["path"])
        return {"id": row["id"], "trash": name}

    def trash(self, viewer: Viewer) -> list[dict]:
        out = []
        for record_file in sorted((self.outputs / TRASH).glob("*.json"), reverse=True):
            record = _record(record_file)
            if record is not None and (viewer.sees_all or record.get("top") == login_folder(viewer.login)):
                out.append({"name": record_file.name[:-5], "original": os.path.basename(record["original"]),
                            "deleted": record.get("deleted")})
        return out

    def restore(self, viewer: Viewer, name: str) -> dict:
        if not _TRASH_NAME.match(name or ""):
            raise NotFound("name", "no such picture in your trash")
        trash = self.outputs / TRASH
        record_file = trash / (os.path.basename(name) + ".json")
        record = _record(record_file)
        if record is None or not (viewer.sees_all or record.get("top") == login_folder(viewer.login)):
            raise NotFound("name", "no such picture in your trash")
        original = Path(record["original"])
        try:
            original.resolve().relative_to(self.outputs)
        except ValueError:
            raise InvalidRequest("name", "that trash record points outside the outputs folder") from None
        if original.exists():
            raise InvalidRequest("name", f"{original.name} exists again; not overwritten")
        original.parent.mkdir(parents=True, exist_ok=True)
        os.replace(trash / os.path.basename(name), original)
        record_file.unlink()
        self._scanned_at = 0.0
        return {"restored": original.name}

    def empty_trash(self, viewer: Viewer) -> int:
        trash, count = self.outputs / TRASH, 0
        for record_file in list(trash.glob("*.json")):
            record = _record(record_file)
            if record is not None and (viewer.sees_all or record.get("top") == login_folder(viewer.login)):
                (trash / record_file.name[:-5]).unlink(missing_ok=True)
                record_file.unlink(missing_ok=True)
                count += 1
        return count

    # --- pictures -------------------------------------------------------------------------------
    def file(self, viewer: Viewer, item_id: int) -> Path:
        return Path(self._visible(viewer, self.index.get(int(item_id)))["path"])

    def thumbnail(self, viewer: Viewer, item_id: int) -> Path | None:
        """A WebP thumbnail (at most 256 px a side), made on first ask and kept; None for a clip it cannot draw."""
        return self.thumbnail_of(self._visible(viewer, self.index.get(int(item_id))))

    def thumb_path(self, row: dict) -> Path:
        # Beside the owner's outputs, so Gradio's owner-checked file route serves a login its own thumbnails
        folder = self.outputs / row["top"] / ".thumbs" if row["root"] == 0 and row["top"] else self.outputs / FOLDER / "thumbs"
        return folder / f"{row['id']}-{int(row['mtime'])}-{row['size']}.webp"

    def thumbnail_of(self, row: dict) -> Path | None:
        target = self.thumb_path(row)
        if target.exists():
            return target
        from PIL import Image

        try:
            with _poster(row["path"]) if row["kind"] == "clip" else Image.open(row["path"]) as image:
                if image.width * image.height > self.max_pixels:
                    return None
                image.draft("RGB", (THUMB, THUMB))
                image.thumbnail((THUMB, THUMB))
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
                target.parent.mkdir(parents=True, exist_ok=True)
                temp = target.with_suffix(f".{threading.get_ident()}.tmp")
                image.save(temp, format="WEBP", quality=80, method=0)
                os.replace(temp, target)
        except Exception as exc:  # noqa: BLE001 - a picture that cannot be drawn gets no thumbnail
            log.info("library: no thumbnail for %s: %s", row["path"], exc)
            return None
        return target

    def page_thumbnails(self, page: dict) -> list[tuple[Path | None, dict]]:
        """Each item of a search page with its thumbnail (made now if missing)."""
        out = []
        for item in page["items"]:
            row = self.index.get(item["id"])
            out.append((self.thumbnail_of(row) if row else None, item))
        return out

    # --- reproduce ------------------------------------------------------------------------------
    def reproduce(self, viewer: Viewer, item_id: int, catalog: Any = None, addons: Any = None) -> dict:
        """reproduce_body for the picture (`catalog`: this server's models, to pick the checkpoint by its
        hash), with an img2img picture's kept init image and mask, and (`addons`: the engine's AddonRegistry)
        the alwayson_scripts its add-ons read back from the infotext, their kept pictures in them
        (ControlNet units' control pictures)."""
        row = self._visible(viewer, self.index.get(int(item_id)))
        if not row["infotext"]:
            raise InvalidRequest("id", "this picture carries no generation parameters")
        made = reproduce_body(row["infotext"], row["tab"], catalog)
        params = parse_infotext(row["infotext"]).params
        if made["endpoint"] == "/sdapi/v1/img2img":
            self._attach_sources(row, params, made)
        if addons is not None:
            scripts = addons.reproduce_scripts(params, self._kept(row, params))
            if scripts:
                made["body"]["alwayson_scripts"] = {**made["body"].get("alwayson_scripts", {}), **scripts}
        return made

    def _kept(self, row: dict, params: dict[str, str]):
        """kept(key) for AddonSpec.from_infotext: the kept picture the row's infotext (`params`) records under
        `key`, as base64; None where it records none; SourceGone where it is no longer kept."""
        from webui.engine.core.addons import SourceGone
        from webui.engine.core.outputs import SOURCES, find_source

        root = self._source_root(row)

        def kept(key: str) -> str | None:
            if key not in params:
                return None
            found = find_source(root, params[key])
            if found is None:
                raise SourceGone(key, params[key], f"{root.name}/{SOURCES}")
            return base64.b64encode(found.read_bytes()).decode()

        return kept

    def _source_root(self, row: dict) -> Path:
        """The outputs root the row's pictures were kept under (root/<tab>/<date>/file: .inits beside <tab>)."""
        return Path(row["path"]).parents[2] if len(Path(row["path"]).parents) > 2 else self.outputs

    def _attach_sources(self, row: dict, params: dict[str, str], made: dict) -> None:
        """An img2img picture's kept init image and mask (outputs[/<login>]/.inits, beside the folder of the
        tab that saved it: root/<tab>/<date>/file) as base64 in the body; one recorded but gone is a 4xx
        naming the field, never a body that would make another picture."""
        from webui.engine.core.addons import SourceGone
        from webui.engine.generation.img2img import INIT_HASH, MASK_HASH

        if INIT_HASH not in params:
            return  # made before Kiri kept init images (or by another tool): the note says what to add
        kept = self._kept(row, params)
        for key, field in ((INIT_HASH, "init_images"), (MASK_HASH, "mask")):
            try:
                data = kept(key)
            except SourceGone as gone:
                raise InvalidRequest(field, f"the {'init image' if field == 'init_images' else 'mask'} this picture was "
                                            f"made from ({key}: {gone.digest[:16]}) is no longer in {gone.where}; "
                                            f"the same picture cannot be made without it") from None
            if data is not None:
                made["body"][field] = [data] if field == "init_images" else data
        made["notes"] = [n for n in made["notes"] if not n.startswith("the source picture is not kept")]


def reproduce_body(infotext: str, tab: str = "txt2img", catalog: Any = None) -> dict:
    """The /sdapi/v1 request that makes the picture again: {"endpoint", "body", "notes"}.

    Every infotext field A1111's API has a field for is mapped back: prompts, seed (and variation seed),
    sampler and schedule, steps, CFG, size, clip skip, checkpoint, VAE, hires fix; LoRAs travel in the
    prompt's tags; image to image's resize mode and inpaint settings. The source picture (init_images, mask)
    is not in the infotext: `Library.reproduce` adds the copy kept with the output. With `catalog` (the
    server's models) the checkpoint is the one whose hash is the infotext's `Model hash`, whatever its name
    is now; the name, with a note, where no checkpoint here has that hash."""
    parsed = parse_infotext(infotext)
    p = parsed.params
    body: dict[str, Any] = dict(infotext_to_request_fields(parsed))
    notes: list[str] = []
    overrides: dict[str, Any] = {}
    if "clip_skip" in body:
        overrides["CLIP_stop_at_last_layers"] = body.pop("clip_skip")
    checkpoint = _checkpoint(catalog, p.get("Model", ""), p.get("Model hash", ""), notes) if catalog is not None else p.get("Model")
    if checkpoint:
        overrides["sd_model_checkpoint"] = checkpoint
    if p.get("VAE"):
        overrides["sd_vae"] = p["VAE"]
    if overrides:
        body["override_settings"] = overrides
    if p.get("Variation seed"):
        body["subseed"] = _int(p["Variation seed"])
        body["subseed_strength"] = _float(p.get("Variation seed strength", "0"))
    if "Hires upscale" in p or "Hires resize" in p:
        body["enable_hr"] = True
        if "Hires upscale" in p:
            body["hr_scale"] = _float(p["Hires upscale"])
        elif (found := _SIZE.match(p["Hires resize"])):
            body["hr_resize_x"], body["hr_resize_y"] = int(found.group(1)), int(found.group(2))
        for key, name, convert in (("Hires steps", "hr_second_pass_steps", _int), ("Hires upscaler", "hr_upscaler", str),
                                   ("Hires sampler", "hr_sampler_name", str), ("Hires prompt", "hr_prompt", str),
                                   ("Hires negative prompt", "hr_negative_prompt", str)):
            if p.get(key):
                body[name] = convert(p[key])
    for key in ("Batch size", "Batch pos"):
        if key in p:
            notes.append("made in a batch: this body makes that one picture (its own seed)")
            break
    endpoint = "/sdapi/v1/txt2img"
    if tab.startswith("img2img") or ("Denoising strength" in p and "enable_hr" not in body):
        endpoint = "/sdapi/v1/img2img"
        body.update(_img2img_fields(p))
        notes.append("the source picture is not kept with the output: add init_images (and mask) to run it")
    elif "enable_hr" not in body:
        body.pop("denoising_strength", None)
    body = {k: v for k, v in body.items() if v is not None}
    return {"endpoint": endpoint, "body": body, "notes": notes}


def _checkpoint(catalog: Any, name: str, short_hash: str, notes: list[str]) -> str | None:
    """The checkpoint to ask for: the one whose hash is `short_hash` (renamed or moved since), else the one
    named `name`, with a note that the picture may differ when its hash is not the recorded one."""
    name, short_hash = (name or "").strip(), (short_hash or "").strip().lower()
    if short_hash:
        for entry in catalog.entries:
            if catalog.short_hash(entry) == short_hash:
                if entry.name != name:
                    notes.append(f"checkpoint {name or '(unnamed)'!r} is {entry.name!r} on this server (same Model hash {short_hash})")
                return entry.name
    if not name:
        if short_hash:
            notes.append(f"no checkpoint here has Model hash {short_hash}: the current one is used")
        return None
    found = catalog.find(name)
    if found is None:
        notes.append(f"no checkpoint here is named {name!r}" + (f" or has Model hash {short_hash}" if short_hash else "")
                     + ": the request names it anyway, and the server refuses it until it is added")
        return name
    if short_hash:
        here = catalog.short_hash(found)
        notes.append(f"warning: no checkpoint here has Model hash {short_hash}; the one named {name!r} is used"
                     + (f" (hash {here})" if here else " (its hash is not read yet)") + ", so the picture may differ")
    return found.name


def _img2img_fields(p: dict[str, str]) -> dict[str, Any]:
    """Image to image's own infotext keys back onto /sdapi/v1/img2img fields. Every field is set, also
    where the infotext leaves the value out as the default: the API's defaults (A1111's) differ from
    what the infotext means by leaving it out ("only masked" is the API's default, not the UI's)."""
    from webui.engine.generation.img2img import MASKED_CONTENT, RESIZE_MODES

    fields: dict[str, Any] = {"resize_mode": RESIZE_MODES.index(p["Resize mode"]) if p.get("Resize mode") in RESIZE_MODES else 0}
    if "Mask blur" in p or "Masked content" in p or "Inpaint area" in p:
        fields["mask_blur"] = _int(p.get("Mask blur", "4"))
        fields["inpainting_mask_invert"] = 1 if p.get("Mask mode") == "Inpaint not masked" else 0
        fields["inpainting_fill"] = MASKED_CONTENT.index(p["Masked content"]) if p.get("Masked content") in MASKED_CONTENT else 1
        fields["inpaint_full_res"] = p.get("Inpaint area") == "Only masked"
        fields["inpaint_full_res_padding"] = _int(p.get("Only masked padding", "32"))
    return fields


def _poster(path: str):
    """A clip's first frame as a PIL image (its poster); GIFs are opened by PIL itself."""
    from PIL import Image

    if path.lower().endswith(".gif"):
        return Image.open(path)
    import cv2

    capture = cv2.VideoCapture(path)
    try:
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok or frame is None:
        raise OSError("no frame could be read")
    return Image.fromarray(frame[:, :, ::-1].copy())


def _check_text(name: str, value: Any) -> None:
    """A filter is text SQLite can hold: a string, no NUL, no lone surrogate (a client's bytes are data)."""
    if not isinstance(value, str):
        raise InvalidRequest(name, f"{name} must be text")
    if "\0" in value:
        raise InvalidRequest(name, f"{name} must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(name, f"{name} is not valid Unicode text") from None


def _int(text: Any) -> int | None:
    try:
        return int(float(str(text)))
    except ValueError:
        return None


def _float(text: Any) -> float | None:
    try:
        return float(str(text))
    except ValueError:
        return None


def _record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("original"), str) else None


def _make_cursor(row: dict) -> str:
    return base64.urlsafe_b64encode(f"{row['mtime']!r}:{row['id']}".encode()).decode()


def _read_cursor(cursor: str) -> tuple[float, int]:
    try:
        mtime, item_id = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        return float(mtime), int(item_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("cursor", "not a cursor this server gave (use the `next` of the previous page)") from None
