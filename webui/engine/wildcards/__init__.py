"""Dynamic prompts, as sd-dynamic-prompts writes them in its default (random) mode, resolved per image
from the image's seed, so one seed repeats its picture:

    {red|green|blue}          one of the variants
    {2::red|blue}             weighted: red twice as likely as blue (a variant without a weight weighs 1)
    {2$$a|b|c}                two different variants, joined by ", "; {1-3$$a|b|c} one to three;
    {2$$ and $$a|b|c}         joined by " and "
    __colour__                one line of wildcards/colour.txt (Settings.wildcards_dir): one option a line,
    __folder/name__           blank lines and `#` comments skipped; wildcards/folder/name.txt

Variants nest, and a wildcard's line may hold variants and other wildcards (at most MAX_DEPTH deep: a
wildcard that names itself is refused). `\\{`, `\\}` and `\\|` are the characters themselves; a `{`
with no closing `}` is text, as is `|` outside braces (`[a|b]` is A1111's alternation, read later by
the prompt parser). Styles are merged first (their `{prompt}` is gone by then).

A template is checked before the job is queued (a wildcard file that is missing refuses the request,
naming `prompt`); each image's prompt is then drawn with `random.Random(seed)` (the negative prompt
with a generator of its own), and its infotext holds the resolved prompt, with the template under
`Template` / `Negative Template` (what A1111 writes with sd-dynamic-prompts).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.prompt_steps import ImagePrompt

__all__ = ["MAX_DEPTH", "has_syntax", "check_template", "register", "resolve", "wildcard_names"]

MAX_DEPTH = 10
MAX_OPTIONS_CHECKED = 10_000  # wildcard lines read while checking a template, at most
WILDCARD = re.compile(r"__([^\s_{}|][^\s{}|]*?)__")
MULTI = re.compile(r"\s*(\d*)\s*(-?)\s*(\d*)\s*\$\$(?:([^${}|]*)\$\$)?")
WEIGHT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*::")
ESCAPES = {"\\{": "{", "\\}": "}", "\\|": "|"}


# --- the template as a tree -------------------------------------------------------------------------

@dataclass
class Wildcard:
    name: str


@dataclass
class Variants:
    options: list[tuple[float, "Seq"]]
    low: int = 1
    high: int = 1
    separator: str = ", "


Node = Union[str, Wildcard, Variants]


@dataclass
class Seq:
    nodes: list[Node] = field(default_factory=list)

    def add_text(self, text: str) -> None:
        if not text:
            return
        if self.nodes and isinstance(self.nodes[-1], str):
            self.nodes[-1] += text
        else:
            self.nodes.append(text)


def parse(text: str) -> Seq:
    seq, _ = _parse_seq(text, 0, inside=False)
    return seq


def _parse_seq(text: str, i: int, inside: bool) -> tuple[Seq, int]:
    """Nodes from `i` up to a top-level `|` or `}` (inside braces) or the end; returns (seq, stop index).
    Inside braces, reaching the end without a `}` returns i = -1."""
    seq = Seq()
    start = i
    while i < len(text):
        two = text[i:i + 2]
        if two in ESCAPES:
            seq.add_text(text[start:i] + ESCAPES[two])
            i += 2
            start = i
            continue
        c = text[i]
        if inside and c in "|}":
            seq.add_text(text[start:i])
            return seq, i
        if c == "{":
            variants, end = _parse_variants(text, i + 1)
            if variants is None:  # no closing brace: the `{` is text
                i += 1
                continue
            seq.add_text(text[start:i])
            seq.nodes.append(variants)
            i = start = end
            continue
        if c == "_" and two == "__":
            match = WILDCARD.match(text, i)
            if match:
                seq.add_text(text[start:i])
                seq.nodes.append(Wildcard(match.group(1)))
                i = start = match.end()
                continue
        i += 1
    seq.add_text(text[start:i])
    return seq, (-1 if inside else i)


def _parse_variants(text: str, i: int) -> tuple[Variants | None, int]:
    """The variants after a `{` at i - 1, and the index after their `}`; (None, i) when it never closes."""
    low = high = 1
    separator = ", "
    multi = MULTI.match(text, i)
    if multi and (multi.group(1) or multi.group(3)):
        first, dash, last = multi.group(1), multi.group(2), multi.group(3)
        low = int(first) if first else (0 if dash else 1)
        high = int(last) if last else (10**6 if dash else low)
        if multi.group(4) is not None:
            separator = multi.group(4)
        i = multi.end()
    options: list[tuple[float, Seq]] = []
    while True:
        weight = 1.0
        weighted = WEIGHT.match(text, i)
        if weighted:
            weight = float(weighted.group(1))
            i = weighted.end()
        option, stop = _parse_seq(text, i, inside=True)
        if stop < 0:
            return None, i
        options.append((weight, option))
        if text[stop] == "}":
            return Variants(options, min(low, high), max(low, high), separator), stop + 1
        i = stop + 1


def has_syntax(text: str) -> bool:
    """Whether the text holds variants or wildcards (else it is used as it is)."""
    if "{" not in text and "__" not in text:
        return False
    return any(not isinstance(node, str) for node in parse(text).nodes)


# --- wildcard files ------------------------------------------------------------------------------

def _file(root: Path, name: str) -> Path:
    path = (root / f"{name}.txt").resolve()
    if not path.is_relative_to(root.resolve()):
        raise InvalidRequest("prompt", f"__{name}__: a wildcard must be a file inside {root}")
    return path


def _lines(root: Path, name: str) -> list[str]:
    path = _file(root, name)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InvalidRequest("prompt", f"__{name}__: there is no wildcard file {name}.txt in {root}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest("prompt", f"__{name}__: cannot read {path.name}: {exc}") from exc
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise InvalidRequest("prompt", f"__{name}__: {name}.txt has no options (one a line; # starts a comment)")
    return lines


def wildcard_names(settings: Any) -> list[str]:
    """Every wildcard file's name, as a prompt writes it between `__`."""
    root = Path(settings.wildcards_dir)
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.txt"))


# --- checking and resolving -----------------------------------------------------------------------

def check_template(settings: Any, text: str) -> None:
    """Every wildcard any draw could reach exists and nests at most MAX_DEPTH deep; else InvalidRequest."""
    root = Path(settings.wildcards_dir)
    budget = [MAX_OPTIONS_CHECKED]
    seen: set[tuple[str, int]] = set()

    def walk(seq: Seq, depth: int) -> None:
        for node in seq.nodes:
            if isinstance(node, Variants):
                for _, option in node.options:
                    walk(option, depth)
            elif isinstance(node, Wildcard):
                if depth >= MAX_DEPTH:
                    raise InvalidRequest("prompt", f"__{node.name}__: wildcards nest more than {MAX_DEPTH} deep "
                                                   "(does a wildcard file name itself?)")
                if (node.name, depth) in seen:
                    continue
                seen.add((node.name, depth))
                for line in _lines(root, node.name):
                    budget[0] -= 1
                    if budget[0] < 0:
                        return
                    walk(parse(line), depth + 1)

    walk(parse(text), 0)


def resolve(settings: Any, text: str, rng: random.Random) -> str:
    """One draw of the template."""
    root = Path(settings.wildcards_dir)

    def draw(seq: Seq, depth: int) -> str:
        out = []
        for node in seq.nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, Wildcard):
                if depth >= MAX_DEPTH:
                    raise InvalidRequest("prompt", f"__{node.name}__: wildcards nest more than {MAX_DEPTH} deep")
                out.append(draw(parse(rng.choice(_lines(root, node.name))), depth + 1))
            else:
                out.append(_pick(node, rng, lambda option: draw(option, depth)))
        return "".join(out)

    return draw(parse(text), 0)


def _pick(variants: Variants, rng: random.Random, draw) -> str:
    options = list(variants.options)
    count = min(rng.randint(variants.low, variants.high) if variants.high > variants.low else variants.low, len(options))
    picked = []
    for _ in range(count):
        weights = [w for w, _ in options]
        index = rng.choices(range(len(options)), weights=weights)[0] if sum(weights) > 0 else rng.randrange(len(options))
        picked.append(draw(options.pop(index)[1]))
    return variants.separator.join(picked)


# --- the prompt steps ------------------------------------------------------------------------------

def check_request(settings: Any, request: Any) -> None:
    """Before the job is queued: the templates' wildcards exist (the hires fix's own prompts too)."""
    hires = getattr(request, "hires", None)
    for text in (getattr(request, "prompt", None), getattr(request, "negative_prompt", None),
                 getattr(hires, "prompt", None), getattr(hires, "negative_prompt", None)):
        if isinstance(text, str) and has_syntax(text):
            check_template(settings, text)


def for_image(settings: Any, prompt: str, negative: str, seed: int) -> ImagePrompt | None:
    """The image's prompts drawn from its seed, with the templates for the infotext; None when neither
    prompt has variants or wildcards."""
    dynamic, dynamic_negative = has_syntax(prompt), has_syntax(negative)
    if not dynamic and not dynamic_negative:
        return None
    infotext: dict[str, object] = {}
    if dynamic:
        resolved = resolve(settings, prompt, random.Random(seed))
        infotext["Template"] = prompt
    else:
        resolved = prompt
    if dynamic_negative:
        resolved_negative = resolve(settings, negative, random.Random(f"negative {seed}"))
        infotext["Negative Template"] = negative
    else:
        resolved_negative = negative
    return ImagePrompt(resolved, resolved_negative, infotext)


def register(registries: Any) -> None:
    """Called by bootstrap.build_registries (after styles): templates checked before a job is queued,
    and each image's prompts drawn from its seed in the runner."""
    registries.add_request_step(check_request)
    registries.add_image_prompt_step(for_image)
