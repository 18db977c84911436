"""Saved styles, as AUTOMATIC1111 keeps them: `styles.csv` (Settings.styles_file) with the header
`name,prompt,negative_prompt`, and any `styles*.csv` beside it (read after it, a later file's style
replacing an earlier one of the same name, as A1111's style database does).

A request names styles in `styles`; before the job is queued (a prompt step, core/prompt_steps.py)
each is merged into the prompt and the negative prompt in order, as A1111's `merge_prompts`: a
style's text with `{prompt}` has it replaced by the prompt so far, any other is appended after ", ".
What is generated, and written as the infotext's prompt, is the styled prompt (A1111 writes no style
names); reading an infotext, `extract_styles` finds the styles whose text it holds and takes it out
again (A1111's extract_styles_from_prompt), so PNG info's "send to" does not apply a style twice.

Saving or deleting a style rewrites its file whole: a temporary file beside it, then a rename, so a
crash or a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.text import check_text

__all__ = ["FIELD", "Style", "apply_styles", "delete_style", "extract_styles", "find_styles", "load_styles", "merge",
           "register", "save_style", "style_files"]

FIELD = "styles"  # A1111's request field: what the errors name
HEADER = ("name", "prompt", "negative_prompt")
MAX_NAME = 200
_write_lock = threading.Lock()  # one read-modify-write of a styles file at a time (every user's)


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""
    path: Path | None = None  # the file it was read from; None: a new style, saved to styles.csv

    def plain(self) -> dict[str, str]:
        """A1111's /sdapi/v1/prompt-styles entry."""
        return {"name": self.name, "prompt": self.prompt, "negative_prompt": self.negative_prompt}


# --- A1111's merge and extract ---------------------------------------------------------------

def merge(style_text: str, prompt: str) -> str:
    """One style's text merged into a prompt: `{prompt}` replaced by it, else appended after ", "."""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative: str, styles: list[Style]) -> tuple[str, str]:
    """The prompt and negative prompt with each style merged in, in order."""
    for style in styles:
        prompt, negative = merge(style.prompt, prompt), merge(style.negative_prompt, negative)
    return prompt, negative


def _extract_text(style_text: str, prompt: str) -> tuple[bool, str]:
    """(whether `prompt` holds what merging `style_text` adds, the prompt without it)."""
    text, style_text = prompt.strip(), style_text.strip()
    if "{prompt}" in style_text:
        left, _, right = style_text.partition("{prompt}")
        if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
            return True, text[len(left):len(text) - len(right)]
        return False, prompt
    if text.endswith(style_text):
        text = text[:len(text) - len(style_text)]
        return True, text[:-2] if text.endswith(", ") else text
    return False, prompt


def extract_styles(styles: dict[str, Style], prompt: str, negative: str) -> tuple[list[str], str, str]:
    """(the names of the styles the prompts hold, in the order they were applied, the prompts without
    them): the last applied style is taken off first, as A1111 reads an infotext."""
    found: list[str] = []
    candidates = [s for s in styles.values() if s.prompt or s.negative_prompt]
    while True:
        for style in candidates:
            hit, rest = _extract_text(style.prompt, prompt)
            if not hit:
                continue
            hit_negative, rest_negative = _extract_text(style.negative_prompt, negative)
            if hit_negative:
                prompt, negative = rest, rest_negative
                candidates.remove(style)
                found.append(style.name)
                break
        else:
            return list(reversed(found)), prompt, negative


# --- files ---------------------------------------------------------------------------------------

def style_files(settings: Any) -> list[Path]:
    """styles.csv, then the other styles*.csv beside it, by name."""
    main = Path(settings.styles_file)
    others = sorted(p for p in main.parent.glob("styles*.csv") if p.name != main.name) if main.parent.is_dir() else []
    return [main, *others]


def _read(path: Path) -> list[Style]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(FIELD, f"cannot read the styles file {path.name}: {exc}") from exc
    styles = []
    for row in csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True):
        name = (row.get("name") or "").strip()
        if not name:
            continue
        prompt = row.get("prompt") if "prompt" in row else row.get("text")  # A1111's oldest files say "text"
        styles.append(Style(name, prompt or "", row.get("negative_prompt") or "", path))
    return styles


def load_styles(settings: Any) -> dict[str, Style]:
    """Every saved style by name, read now (the files are small; another process may have edited them)."""
    styles: dict[str, Style] = {}
    for path in style_files(settings):
        for style in _read(path):
            styles[style.name] = style
    return styles


def find_styles(settings: Any, names: list[str]) -> list[Style]:
    """The styles called `names`, in that order; an unknown name refuses the request, naming `styles`."""
    known = load_styles(settings)
    missing = [n for n in names if n not in known]
    if missing:
        available = ", ".join(repr(n) for n in list(known)[:20]) or f"none (add them to {Path(settings.styles_file).name})"
        raise InvalidRequest(FIELD, f"unknown style {missing[0]!r}; available: {available}")
    return [known[n] for n in names]


def _write(path: Path, styles: list[Style]) -> None:
    """The file rewritten whole: a temporary file beside it, then renamed over it."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")  # csv's own line ends, as A1111's DictWriter writes
    writer.writerow(HEADER)
    for style in styles:
        writer.writerow((style.name, style.prompt, style.negative_prompt))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8-sig", newline="") as file:
            file.write(buffer.getvalue())
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_style(settings: Any, name: str, prompt: str, negative_prompt: str = "") -> Style:
    """Save the prompts as the style `name`: replaced in the file that holds it, else added to styles.csv."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("name", "give the style a name")
    name = name.strip()
    if len(name) > MAX_NAME or any(c in name for c in "\r\n"):
        raise InvalidRequest("name", f"a style name is one line of at most {MAX_NAME} characters")
    for field_name, value in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if not isinstance(value, str):
            raise InvalidRequest(field_name, f"the style's {field_name.replace('_', ' ')} must be text")
        check_text(field_name, value)
    with _write_lock:
        existing = load_styles(settings).get(name)
        path = existing.path if existing is not None else Path(settings.styles_file)
        style = Style(name, prompt, negative_prompt, path)
        rows = _read(path)
        if any(s.name == name for s in rows):
            rows = [style if s.name == name else s for s in rows]
        else:
            rows.append(style)
        _write(path, rows)
    return style


def delete_style(settings: Any, name: str) -> None:
    """Delete the style `name` from its file (every file that holds one of that name)."""
    with _write_lock:
        found = False
        for path in style_files(settings):
            rows = _read(path)
            kept = [s for s in rows if s.name != name]
            if len(kept) != len(rows):
                _write(path, kept)
                found = True
    if not found:
        raise InvalidRequest(FIELD, f"there is no style called {name!r}")


# --- the prompt step --------------------------------------------------------------------------------

def apply_to_request(settings: Any, request: Any) -> None:
    """The request's styles merged into its prompts (and a hires fix's own prompts, as A1111 does),
    then cleared, so a request prepared twice is not styled twice."""
    names = getattr(request, FIELD, None)
    if not names:
        return
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidRequest(FIELD, "styles must be a list of style names")
    styles = find_styles(settings, names)
    request.prompt, request.negative_prompt = apply_styles(request.prompt or "", request.negative_prompt or "", styles)
    hires = getattr(request, "hires", None)
    if hires is not None and (hires.prompt or hires.negative_prompt):
        # a new object: the hires settings may be shared with other requests (an X/Y grid's cells)
        prompt = apply_styles(hires.prompt, "", styles)[0] if hires.prompt else ""
        negative = apply_styles("", hires.negative_prompt, styles)[1] if hires.negative_prompt else ""
        request.hires = replace(hires, prompt=prompt, negative_prompt=negative)
    request.styles = []


def register(registries: Any) -> None:
    """Called by bootstrap.build_registries: styles are merged into a request's prompts before the job is queued."""
    registries.add_request_step(apply_to_request)
