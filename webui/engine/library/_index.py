"""The index: SQLite with FTS5 (Python's own sqlite3) in `outputs/.library/index.sqlite3`, WAL.

The files are the source of truth: a scan walks each folder, reads only files whose (size, mtime) changed,
drops rows whose file is gone, and commits every few hundred files, so a server killed mid-scan leaves an
index the next scan completes. Deleting the index loses nothing but favourites.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from ._meta import Meta, read_meta

log = logging.getLogger(__name__)

PICTURES = {".png", ".jpg", ".jpeg", ".webp"}
CLIPS = {".mp4", ".webm", ".gif"}
_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BATCH = 500
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
  id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, root INTEGER NOT NULL, top TEXT NOT NULL, tab TEXT NOT NULL,
  size INTEGER NOT NULL, mtime REAL NOT NULL, width INTEGER, height INTEGER, kind TEXT NOT NULL,
  source TEXT, prompt TEXT, negative TEXT, model TEXT, sampler TEXT, seed INTEGER, networks TEXT,
  infotext TEXT, note TEXT);
CREATE INDEX IF NOT EXISTS files_mtime ON files(mtime DESC, id DESC);
CREATE INDEX IF NOT EXISTS files_top ON files(root, top, mtime DESC);
CREATE TABLE IF NOT EXISTS skipped (path TEXT PRIMARY KEY, size INTEGER, mtime REAL, note TEXT);
CREATE TABLE IF NOT EXISTS favourites (path TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS looks (id INTEGER PRIMARY KEY, stamp TEXT NOT NULL, v BLOB NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(prompt, negative, networks, tokenize='unicode61');
"""


# A look's stamp as SQL (Index.look_stamp computes the same in Python), and the join that gives each row
# its current look as `l.v` (NULL when none is recorded for the file as it is now).
_STAMP_SQL = "(CAST(CAST(f.mtime * 1000 AS INTEGER) AS TEXT) || '-' || f.size)"
LOOKS_JOIN = f"LEFT JOIN looks l ON l.id = f.id AND l.stamp = {_STAMP_SQL}"


@dataclass
class ScanReport:
    seen: int = 0
    read: int = 0
    removed: int = 0
    skipped: list[str] = field(default_factory=list)  # "path: why"
    seconds: float = 0.0


def _walk(root: Path, notes: list[str], dir_times: dict[str, float], quick: bool
          ) -> Iterator[tuple[str, os.stat_result | None]]:
    """Every picture and clip under root: symlinks not followed (a link out of the folder is never read),
    dot folders (.library, .trash, .jobs, .thumbs) and Kiri's .tmp files left out. `quick`: a folder whose
    mtime is the one `dir_times` remembers has had no file added, removed or renamed; its files come
    without a stat (None: take it as unchanged). `dir_times` is updated as folders are read."""
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            stamp = os.stat(folder).st_mtime
            entries = list(os.scandir(folder))
        except OSError as exc:
            notes.append(f"{folder}: {exc.strerror or exc}")
            continue
        same = quick and dir_times.get(folder) == stamp
        dir_times[folder] = stamp
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_symlink():
                    notes.append(f"{entry.path}: a symbolic link, not followed")
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in PICTURES | CLIPS:
                    yield entry.path, None if same else entry.stat(follow_symlinks=False)
            except OSError:  # gone while we looked
                continue


class Index:
    """One SQLite file; a connection per thread; one writer at a time (the scan lock)."""

    def __init__(self, db_path: Path, roots: list[Path]):
        self.db_path = Path(db_path)
        self.roots = [Path(r) for r in roots]  # roots[0]: the outputs folder; the rest: read-only --library-dir
        self._local = threading.local()
        self._write = threading.Lock()
        self._dir_times: dict[str, float] = {}
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._write:
            db = self.db()
            db.executescript(_SCHEMA)
            db.commit()

    def folders_changed(self) -> bool:
        """Whether a folder the last scan read has had a file added, removed or renamed since (a stat per
        folder, no listing): Kiri writes outputs by renaming a finished temp file, which moves the folder's mtime."""
        for folder, stamp in list(self._dir_times.items()):
            try:
                if os.stat(folder).st_mtime != stamp:
                    return True
            except OSError:
                return True
        return not self._dir_times

    def db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.db_path, timeout=30, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    # --- scanning ---------------------------------------------------------------------------
    def scan(self, progress=None, quick: bool = False) -> ScanReport:
        """Bring the index up to the files. `quick`: only folders changed since the last scan are read
        file by file (new outputs are found in milliseconds); a full scan also finds files changed in place."""
        report, started = ScanReport(), time.perf_counter()
        with self._write:
            db = self.db()
            for number, root in enumerate(self.roots):
                if root.is_dir():
                    self._scan_root(db, number, root, report, progress, quick)
        report.seconds = time.perf_counter() - started
        return report

    def _scan_root(self, db: sqlite3.Connection, number: int, root: Path, report: ScanReport, progress, quick: bool) -> None:
        known = {row[0]: (row[1], row[2]) for row in db.execute("SELECT path, size, mtime FROM files WHERE root=?", (number,))}
        prefix = str(root.resolve()) + os.sep
        skipped = {row[0]: (row[1], row[2]) for row in db.execute("SELECT path, size, mtime FROM skipped WHERE path >= ? AND path < ?",
                                                                  (prefix, prefix[:-1] + chr(ord(os.sep) + 1)))}
        seen: set[str] = set()
        pending = 0
        for path, stat in _walk(root.resolve(), report.skipped, self._dir_times, quick):
            seen.add(path)
            report.seen += 1
            if stat is None and (path in known or path in skipped):
                continue
            if stat is None:
                try:
                    stat = os.stat(path, follow_symlinks=False)
                except OSError:
                    continue
            stamp = (stat.st_size, stat.st_mtime)
            if known.get(path) == stamp or skipped.get(path) == stamp:
                continue
            self._read_one(db, number, root.resolve(), path, stat, report)
            report.read += 1
            pending += 1
            if pending >= _BATCH:
                db.commit()
                pending = 0
                if progress:
                    progress(report)
        gone = [p for p in known if p not in seen]
        for path in gone:
            self._remove(db, path)
        report.removed += len(gone)
        db.executemany("DELETE FROM skipped WHERE path=?", [(p,) for p in skipped if p not in seen])
        db.commit()

    def _read_one(self, db, number: int, root: Path, path: str, stat: os.stat_result, report: ScanReport) -> None:
        from PIL import Image

        ext = os.path.splitext(path)[1].lower()
        width = height = None
        meta, kind = Meta(), "clip" if ext in CLIPS else "picture"
        if kind == "picture":
            try:
                with Image.open(path) as image:  # header and text chunks only; pixels never decoded
                    width, height = image.size
                    meta = read_meta(image)
            except FileNotFoundError:
                return  # removed while indexing: the next scan's business
            except Exception as exc:  # noqa: BLE001 - corrupt, truncated, not an image: skipped with a note
                note = f"{type(exc).__name__}: {str(exc)[:200]}"
                report.skipped.append(f"{path}: {note}")
                db.execute("INSERT OR REPLACE INTO skipped VALUES (?,?,?,?)", (path, stat.st_size, stat.st_mtime, note))
                self._remove(db, path)
                return
        parts = Path(path).relative_to(root).parts[:-1]
        top = parts[0] if parts else ""
        tab = next((parts[i - 1] for i in range(len(parts) - 1, 0, -1) if _DATE_DIR.match(parts[i])), top)
        networks = " ".join(meta.networks)
        row = (path, number, top, tab, stat.st_size, stat.st_mtime, width, height, kind, meta.source, meta.prompt,
               meta.negative, meta.model, meta.sampler, meta.seed, networks, meta.infotext, meta.note)
        old = db.execute("SELECT id FROM files WHERE path=?", (path,)).fetchone()
        if old is not None:
            db.execute("DELETE FROM fts WHERE rowid=?", (old[0],))
            db.execute("""UPDATE files SET path=?, root=?, top=?, tab=?, size=?, mtime=?, width=?, height=?, kind=?, source=?,
                          prompt=?, negative=?, model=?, sampler=?, seed=?, networks=?, infotext=?, note=? WHERE id=?""",
                       (*row, old[0]))
            rowid = old[0]
        else:
            rowid = db.execute("""INSERT INTO files (path, root, top, tab, size, mtime, width, height, kind, source, prompt,
                                  negative, model, sampler, seed, networks, infotext, note)
                                  VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""", row).lastrowid
        db.execute("DELETE FROM skipped WHERE path=?", (path,))
        db.execute("INSERT INTO fts (rowid, prompt, negative, networks) VALUES (?,?,?,?)",
                   (rowid, meta.prompt, meta.negative, networks))

    def _remove(self, db, path: str) -> None:
        old = db.execute("SELECT id FROM files WHERE path=?", (path,)).fetchone()
        if old is not None:
            db.execute("DELETE FROM fts WHERE rowid=?", (old[0],))
            db.execute("DELETE FROM looks WHERE id=?", (old[0],))
            db.execute("DELETE FROM files WHERE id=?", (old[0],))

    def forget(self, path: str) -> None:
        db = self.db()  # sqlite's own lock (busy timeout) orders this after a scan's current batch
        self._remove(db, path)
        db.commit()

    # --- reading ----------------------------------------------------------------------------
    def get(self, item_id: int) -> dict | None:
        if not -(2**63) <= item_id < 2**63:
            return None
        row = self.db().execute("SELECT f.*, fav.path IS NOT NULL AS favourite FROM files f "
                                "LEFT JOIN favourites fav ON fav.path = f.path WHERE f.id=?", (item_id,)).fetchone()
        return dict(row) if row is not None else None

    def set_favourite(self, path: str, on: bool) -> None:
        db = self.db()
        if on:
            db.execute("INSERT OR IGNORE INTO favourites VALUES (?)", (path,))
        else:
            db.execute("DELETE FROM favourites WHERE path=?", (path,))
        db.commit()

    def query(self, where: list[str], args: list[Any], match: str | None, limit: int | None,
              columns: str = "f.*, fav.path IS NOT NULL AS favourite", join: str = "") -> list[dict]:
        """Rows newest first (`limit` None: all of them; then ask only for the `columns` needed, and `join`
        what they come from, e.g. LOOKS_JOIN)."""
        sql = f"SELECT {columns} FROM files f LEFT JOIN favourites fav ON fav.path = f.path {join}"
        if match is not None:
            where = ["f.id IN (SELECT rowid FROM fts WHERE fts MATCH ?)", *where]
            args = [match, *args]
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY f.mtime DESC, f.id DESC" + (" LIMIT ?" if limit is not None else "")
        return [dict(r) for r in self.db().execute(sql, [*args, *([limit] if limit is not None else [])])]

    # --- looks (the Library's "most like this picture" order; library/_looks.py) ----------------
    def look(self, row: dict) -> bytes | None:
        """The look recorded for this file as it is now (None: none, or taken before it changed)."""
        found = self.db().execute("SELECT v FROM looks WHERE id=? AND stamp=?", (row["id"], self.look_stamp(row))).fetchone()
        return found[0] if found is not None else None

    def set_look(self, item_id: int, stamp: str, vector: bytes) -> None:
        db = self.db()
        if db.execute("SELECT 1 FROM files WHERE id=?", (item_id,)).fetchone() is not None:  # not one gone meanwhile
            db.execute("INSERT OR REPLACE INTO looks VALUES (?,?,?)", (item_id, stamp, vector))
            db.commit()

    @staticmethod
    def look_stamp(row: dict) -> str:
        """Which file a look was taken from (missing_looks computes the same in SQL)."""
        return f"{int(row['mtime'] * 1000)}-{row['size']}"

    def missing_looks(self, limit: int) -> list[dict]:
        """Pictures whose look is not recorded for their current file (new or changed), newest first."""
        return [dict(r) for r in self.db().execute(
            "SELECT f.* FROM files f LEFT JOIN looks l ON l.id = f.id "
            f"WHERE l.id IS NULL OR l.stamp != {_STAMP_SQL} "
            "ORDER BY f.mtime DESC LIMIT ?", (limit,))]

    def distinct(self, column: str, where: list[str], args: list[Any]) -> list[str]:
        assert column in ("model", "sampler", "tab")
        sql = f"SELECT DISTINCT {column} FROM files f" + (" WHERE " + " AND ".join(where) if where else "")
        return sorted(r[0] for r in self.db().execute(sql, args) if r[0])

    def counts(self) -> dict[str, int]:
        db = self.db()
        return {"files": db.execute("SELECT COUNT(*) FROM files").fetchone()[0],
                "skipped": db.execute("SELECT COUNT(*) FROM skipped").fetchone()[0]}


def when(text: str, end: bool = False) -> float:
    """A YYYY-MM-DD date as a timestamp: its start, or (end) the start of the next day."""
    day = datetime.strptime(text, "%Y-%m-%d")
    return day.timestamp() + (86400 if end else 0)

