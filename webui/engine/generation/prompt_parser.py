"""The prompt language as AUTOMATIC1111 reads it: emphasis, BREAK, prompt editing and alternation.

Pure Python (no torch, no parser library), so the UI's token counter and the API can use it cheaply.

Two readings of one prompt, as in A1111 (modules/prompt_parser.py):

1. `PromptTree` / `prompt_schedule(text, steps)`: editing and alternation. The text is read by the
   grammar A1111 gives lark:

       top      := (prompt | one of [ ] ( ) :)*        stray brackets are literal text, at the top only
       prompt   := (emphasis | edit | alternate | plain)*
       emphasis := "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"      kept as written
       edit     := "[" [prompt ":"] prompt ":" NUMBER "]"                           [from:to:when], [to:when]
       alternate:= "[" prompt ("|" [prompt])+ "]"                                  [a|b|c]
       plain    := (any character but \\ [ ] ( ) : |, or \\ and any character)+

   A prompt the grammar cannot read at all (a `|` outside [a|b], a lone backslash at the end) is
   one text for every step, as written. Where the grammar reads a text two ways, an edit or
   alternation is preferred to literal brackets; A1111's lark picks the same on every prompt
   checked but one odd kind: an edit directly followed by an even number of stray brackets
   (`[a:b:2]((`), which lark leaves as literal text and Kiri still reads as an edit. `when` with a decimal point is a fraction of the steps,
   else a step number (A1111's scheduling since 1.6). The result, like A1111's, is a list of
   (last step, text): the text holds up to that step (1-based steps, read by A1111's sampler with a
   0-based counter, so the first text holds one step more: `steps_of` gives Kiri's first steps).

2. `parse_prompt_attention(text)`: the weights of one text, [(fragment, weight)], with
   (x) x1.1, [x] /1.1, (x:w), escapes \\( \\) \\[ \\] \\\\, and BREAK as its own marker
   (`BREAK_MARK`). Unbalanced brackets close at the end of the text, as in A1111. Two differences,
   both where A1111 fails: a weight that is not a number ("(x:1.2.3)") is literal text instead of
   an exception, and a BREAK inside brackets stays a BREAK (A1111 multiplies its marker and then
   encodes the word "BREAK").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

__all__ = ["BREAK_MARK", "PromptTree", "parse_prompt_attention", "plain_text", "prompt_schedule", "steps_of"]

BREAK_MARK = ("BREAK", -1.0)  # the fragment parse_prompt_attention gives for BREAK
EMPHASIS = 1.1

_STRAYS = "[]():"  # what the top level reads as literal text when no rule takes it
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")  # as A1111's `plain` (`.` is no newline)
_NUMBER = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")  # lark's SIGNED_NUMBER
_SPACE = re.compile(r"\s+")


# --- 1. editing and alternation ---------------------------------------------------------------------

@dataclass
class _Edit:
    before: list | None  # None: [to:when], nothing before
    after: list
    when: str  # the number as written
    step: int = 0  # `when` in steps, set for a step count by PromptTree.schedule


@dataclass
class _Alternate:
    options: list[list] = field(default_factory=list)


class _NoMatch(Exception):
    """This bracket is not a rule's: the caller reads it another way."""


class _Unreadable(Exception):
    """The grammar cannot read the text: it is one text, as written."""


class _Reader:
    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def top(self) -> list:
        parts: list = []
        while self.pos < len(self.text):
            parts.extend(self.prompt())
            if self.pos < len(self.text):
                char = self.text[self.pos]
                if char not in _STRAYS:
                    raise _Unreadable(char)
                parts.append(char)
                self.pos += 1
        return parts

    def prompt(self) -> list:
        parts: list = []
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in "([":
                start = self.pos
                try:
                    parts.extend(self.bracket())
                except _NoMatch:
                    self.pos = start
                    break
                continue
            match = _PLAIN.match(text, self.pos)
            if match is None:  # ] ) : | or a backslash that escapes nothing
                break
            parts.append(match.group())
            self.pos = match.end()
        return parts

    def expect(self, char: str) -> None:
        if not self.text.startswith(char, self.pos):
            raise _NoMatch
        self.pos += 1

    def bracket(self) -> list:
        opening = self.text[self.pos]
        self.pos += 1
        first = self.prompt()
        if opening == "(":
            if self.text.startswith(")", self.pos):
                self.pos += 1
                return ["(", *first, ")"]
            self.expect(":")
            second = self.prompt()
            self.expect(")")
            return ["(", *first, ":", *second, ")"]
        if self.text.startswith("]", self.pos):
            self.pos += 1
            return ["[", *first, "]"]
        if self.text.startswith("|", self.pos):
            options = [first]
            while self.text.startswith("|", self.pos):
                self.pos += 1
                options.append(self.prompt())
            self.expect("]")
            return [_Alternate(options)]
        self.expect(":")
        after_colon = self.pos
        when = self.number_and_close()
        if when is not None:
            return [_Edit(None, first, when)]
        self.pos = after_colon
        second = self.prompt()
        self.expect(":")
        when = self.number_and_close()
        if when is None:
            raise _NoMatch
        return [_Edit(first, second, when)]

    def number_and_close(self) -> str | None:
        """[whitespace] NUMBER [whitespace] "]" from here: the number, or None (position unchanged)."""
        start = self.pos
        pos = _skip_space(self.text, self.pos)
        match = _NUMBER.match(self.text, pos)
        if match is not None:
            end = _skip_space(self.text, match.end())
            if self.text.startswith("]", end):
                self.pos = end + 1
                return match.group()
        self.pos = start
        return None


def _skip_space(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    return match.end() if match else pos


class PromptTree:
    """One prompt read for editing and alternation; `schedule(steps)` gives its texts over the steps."""

    def __init__(self, text: str):
        self.text = text or ""
        try:
            self.parts: list | None = _Reader(self.text).top()
        except _Unreadable:
            self.parts = None

    @property
    def dynamic(self) -> bool:
        """Whether the text changes during the steps (an edit or an alternation), for any step count."""
        return self.parts is not None and any(isinstance(p, (_Edit, _Alternate)) for p in _walk(self.parts))

    def schedule(self, steps: int, hires_steps: int | None = None) -> list[tuple[int, str]]:
        """A1111's get_learned_conditioning_prompt_schedules for one prompt: [(last step, text)], the
        last step 1-based. `hires_steps`: the schedule of a hires pass of that many steps after
        `steps` (a step number counts from the first pass's start, a fraction from 1.0 on)."""
        steps = max(1, int(steps))
        if hires_steps is not None:
            total, int_offset, fraction_offset = max(1, int(hires_steps)), steps, 1.0
        else:
            total, int_offset, fraction_offset = steps, 0, 0.0
        if self.parts is None:
            return [(total, self.text)]
        ends = {total}
        for part in _walk(self.parts):
            if isinstance(part, _Edit):
                value = float(part.when)
                value = (value - fraction_offset) * total if "." in part.when else value - int_offset
                part.step = total if value >= total else int(value) if math.isfinite(value) else -1
                if part.step >= 1:
                    ends.add(part.step)
            elif isinstance(part, _Alternate):
                ends.update(range(1, total + 1))
        return [(end, _text_at(self.parts, end)) for end in sorted(ends)]


def _walk(parts: list):
    for part in parts:
        yield part
        if isinstance(part, _Edit):
            yield from _walk(part.before or [])
            yield from _walk(part.after)
        elif isinstance(part, _Alternate):
            for option in part.options:
                yield from _walk(option)


def _text_at(parts: list, step: int) -> str:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, _Edit):
            out.append(_text_at(part.before or [], step) if step <= part.step else _text_at(part.after, step))
        else:
            out.append(_text_at(part.options[(step - 1) % len(part.options)], step))
    return "".join(out)


def prompt_schedule(text: str, steps: int, hires_steps: int | None = None) -> list[tuple[int, str]]:
    """[(last step, text)] as A1111 gives it (see PromptTree.schedule)."""
    return PromptTree(text).schedule(steps, hires_steps)


def steps_of(schedule: list[tuple[int, str]], steps: int) -> list[tuple[int, str]]:
    """A1111's schedule as Kiri's step swap reads it: [(first 0-based step, text)], one entry per change.

    A1111's sampler compares its 0-based step counter with each entry's last step (`step <= end`), so
    an entry holds from the step after the previous one's end; entries starting past the last step
    are never used."""
    out = [(0, schedule[0][1])]
    for (previous_end, _), (_, text) in zip(schedule, schedule[1:]):
        start = previous_end + 1
        if start >= steps:
            break
        if text != out[-1][1]:
            out.append((start, text))
    return out


# --- 2. weights ------------------------------------------------------------------------------------

_ATTENTION = re.compile(r"""
    \\[()\[\]\\]           # an escaped bracket or backslash: the character itself
  | \\                     # a backslash escaping nothing: dropped
  | [(\[]                  # opening brackets
  | :\s*([+-]?[.\d]+)\s*\) # the end of (text:weight)
  | [)\]]                  # closing brackets
  | [^\\()\[\]:]+          # text
  | :                      # a colon that ends no weight
""", re.X)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """[(fragment, weight)] for one text, neighbours of equal weight merged; BREAK is BREAK_MARK.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    fragments: list[list] = []  # [text, weight, is_break]
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            if not fragment[2]:
                fragment[1] *= factor

    def add_text(piece: str) -> None:
        for index, part in enumerate(_BREAK.split(piece)):
            if index:
                fragments.append([BREAK_MARK[0], BREAK_MARK[1], True])
            fragments.append([part, 1.0, False])

    for match in _ATTENTION.finditer(text or ""):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            fragments.append([token[1:], 1.0, False])
        elif token == "(":
            round_open.append(len(fragments))
        elif token == "[":
            square_open.append(len(fragments))
        elif weight is not None and round_open:
            try:
                factor = float(weight)
            except ValueError:  # "(x:1.2.3)": A1111 raises; the colon and number are text, the bracket closes
                fragments.append([token[:-1], 1.0, False])
                factor = EMPHASIS
            scale(round_open.pop(), factor)
        elif token == ")" and round_open:
            scale(round_open.pop(), EMPHASIS)
        elif token == "]" and square_open:
            scale(square_open.pop(), 1 / EMPHASIS)
        else:
            add_text(token)
    for start in round_open:
        scale(start, EMPHASIS)
    for start in square_open:
        scale(start, 1 / EMPHASIS)
    if not fragments:
        fragments = [["", 1.0, False]]
    merged: list[list] = [fragments[0]]
    for fragment in fragments[1:]:
        last = merged[-1]
        if not fragment[2] and not last[2] and fragment[1] == last[1]:
            last[0] += fragment[0]
        else:
            merged.append(fragment)
    return [(t, -1.0) if is_break else (t, w) for t, w, is_break in merged]


def is_break(fragment: tuple[str, float]) -> bool:
    return fragment == BREAK_MARK


def plain_text(text: str) -> tuple[str, bool, bool]:
    """(the text without weight syntax, whether it had weights other than 1, whether it had BREAK), for
    encoders that read no weights: fragments joined, a BREAK as a space."""
    fragments = parse_prompt_attention(text)
    weighted = any(w != 1.0 for t, w in fragments if (t, w) != BREAK_MARK)
    breaks = any(f == BREAK_MARK for f in fragments)
    return "".join(" " if f == BREAK_MARK else f[0] for f in fragments), weighted, breaks
