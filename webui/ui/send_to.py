"""One "Send to" menu under every output picture and clip: the selected result goes into another
tab's input with its prompt, negative prompt, seed, sampler, steps, CFG and size (read from the
picture's own infotext, else the tab's Parameters box), and that tab is selected.

Tabs register what they take (`target`) and where their results are (`menu`) while the app is
built; `wire()` connects every menu to every target once all tabs exist."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.errors import KiriError

from .common import as_image, user_errors

IMAGE_TARGETS = ("Image to image", "Inpaint", "Outpaint", "Super-resolution", "Segmentation", "PNG info")
CLIP_TARGETS = ("Video to video", "Interpolate")
# Field names a target may have, as infotext_to_request_fields names them (sampler: the dropdown's name).
FIELDS = ("prompt", "negative_prompt", "seed", "sampler_name", "scheduler", "steps", "cfg_scale", "width", "height")


@dataclass
class Picked:
    """What a menu sends: the picture (PIL; None for a clip), its file when there is one, and its infotext."""

    image: Any
    path: str | None
    infotext: str


@dataclass
class Target:
    kind: str  # "image" or "clip"
    media: gr.components.Component
    tab_id: str
    fields: dict[str, gr.components.Component] = field(default_factory=dict)
    selects: list[tuple[gr.components.Component, Any]] = field(default_factory=list)  # inner tabs, mode radios
    value: Callable[[Picked], Any] | None = None  # Picked -> the media component's value (default: the picture)
    after_js: str | None = None  # run in the page once the picture is in (the Inpaint brush fits its size)


@dataclass
class _Menu:
    kind: str
    source: gr.components.Component
    choices: gr.Dropdown
    button: gr.Button
    selected: gr.State | None
    infotext: gr.components.Component | None


class SendTo:
    def __init__(self, engine: Engine, tabs: gr.Tabs):
        self.engine, self.tabs = engine, tabs
        self.targets: dict[str, Target] = {}
        self.menus: list[_Menu] = []

    def target(self, label: str, media, tab_id: str, fields: dict | None = None, selects: list | None = None,
               value: Callable[[Picked], Any] | None = None, after_js: str | None = None) -> None:
        kind = "clip" if label in CLIP_TARGETS else "image"
        self.targets[label] = Target(kind, media, tab_id, dict(fields or {}), list(selects or []), value, after_js)

    def menu(self, prefix: str, source, infotext=None, kind: str = "image", exclude: tuple[str, ...] = ()) -> "_Menu":
        """The menu under `source` (a gallery, an image or a clip): "Send to" and where. Its `infotext`
        (the tab's Parameters box) may be set on the returned menu once that box exists."""
        labels = [t for t in (CLIP_TARGETS if kind == "clip" else IMAGE_TARGETS) if t not in exclude]
        with gr.Row(equal_height=True, elem_classes=["kiri-send-to"]):
            button = gr.Button("Send to ➜", size="sm", scale=1, min_width=90, elem_id=f"{prefix}-send")
            choices = gr.Dropdown(labels, value=labels[0], show_label=False, container=False, scale=3,
                                  label="Send to", elem_id=f"{prefix}-send-to")
        selected = None
        if isinstance(source, gr.Gallery):
            selected = gr.State(0)  # the picture the user selected, else the first (a grid's: the grid)
            source.select(_selected_index, None, selected, api_visibility="private", queue=False)
            source.change(lambda: 0, None, selected, api_visibility="private", queue=False)
        self.menus.append(_Menu(kind, source, choices, button, selected, infotext))
        return self.menus[-1]

    def wire(self) -> None:
        for menu in self.menus:
            targets = {label: t for label, t in self.targets.items() if t.kind == menu.kind}
            outputs = _unique([self.tabs, *(c for t in targets.values() for c in _components(t))])
            inputs = [menu.choices, menu.source] + ([menu.selected] if menu.selected else []) + \
                     ([menu.infotext] if menu.infotext else [])

            def send(label, source, *rest, menu=menu, targets=targets):
                index = rest[0] if menu.selected else 0
                infotext = rest[-1] if menu.infotext else ""
                target = targets.get(label)
                if target is None:
                    raise gr.Error(f"{label!r} is not a tab this server has")
                picked = _pick(source, index, infotext, clip=menu.kind == "clip")
                return self._updates(target, picked)

            sent = menu.button.click(send, inputs, outputs, api_visibility="private", queue=False)
            after = {label: t.after_js for label, t in targets.items() if t.after_js}
            if after:  # the page's own follow-up for the chosen target, by its label
                cases = " ".join(f"if (label === {json.dumps(label)}) ({js})();" for label, js in after.items())
                sent.then(None, [menu.choices], None, js=f"(label) => {{ {cases} return []; }}", api_visibility="private",
                          queue=False)

    def _updates(self, target: Target, picked: Picked) -> dict:
        from webui.engine.core.infotext import infotext_to_request_fields, parse_infotext

        values = infotext_to_request_fields(parse_infotext(picked.infotext)) if picked.infotext else {}
        if picked.image is not None:
            values["width"], values["height"] = picked.image.size
        if values.get("sampler_name"):
            try:
                found, schedule = self.engine.samplers.resolve(str(values["sampler_name"]), values.get("scheduler"))
                values["sampler_name"], values["scheduler"] = found.name, schedule
            except KiriError:
                gr.Warning(f"Sampler {values['sampler_name']!r} is not available here; keeping the tab's own.")
                values.pop("sampler_name"), values.pop("scheduler", None)
        if "styles" in target.fields and values.get("prompt"):  # the saved styles the prompts hold, taken out and picked
            from .styles import restore

            values["prompt"], values["negative_prompt"], values["styles"] = restore(
                self.engine, values["prompt"], values.get("negative_prompt") or "")
        updates: dict = {self.tabs: gr.Tabs(selected=target.tab_id)}
        updates[target.media] = target.value(picked) if target.value else (picked.image if picked.image is not None
                                                                          else picked.path)
        for name, component in target.fields.items():
            if name in values and values[name] is not None:
                updates[component] = values[name]
            elif name == "negative_prompt" and values.get("prompt"):
                updates[component] = ""  # the picture had none: not the one typed for something else
        for component, value in target.selects:
            updates[component] = gr.Tabs(selected=value) if isinstance(component, gr.Tabs) else value
        return updates


def _selected_index(evt: gr.SelectData) -> int:
    return evt.index if isinstance(evt.index, int) else 0


def _components(target: Target) -> list:
    return [target.media, *target.fields.values(), *(c for c, _ in target.selects)]


def _unique(components: list) -> list:
    seen, out = set(), []
    for c in components:
        if id(c) not in seen:
            seen.add(id(c))
            out.append(c)
    return out


def _pick(source: Any, index: int, infotext: str, clip: bool = False) -> Picked:
    """The selected item of a gallery value (or an image's or a clip's value), with its infotext:
    the file's own when it carries one, else the tab's Parameters text."""
    from webui.engine.core.infotext import read_infotext

    item = source
    if isinstance(source, list):
        items = list(source)
        if not items:
            raise gr.Error("Nothing to send yet: make a picture first.")
        item = items[index if isinstance(index, int) and 0 <= index < len(items) else 0]
    path = _path_of(item)
    if clip:
        if not path:
            raise gr.Error("Nothing to send yet: make a clip first.")
        return Picked(None, path, infotext or "")

    with user_errors():
        image = as_image(item)
    if image is None:
        raise gr.Error("Nothing to send yet: make a picture first.")
    own = ""
    if path:
        from PIL import Image

        try:
            with Image.open(path) as opened:  # metadata only
                own = read_infotext(opened) or ""
        except (OSError, Image.DecompressionBombError):
            own = ""
    return Picked(image, path, own or infotext or "")


def _path_of(item: Any) -> str | None:
    if isinstance(item, tuple):
        item = item[0]
    if isinstance(item, dict):
        item = item.get("video") or item.get("path") or item.get("image")
        if isinstance(item, dict):
            item = item.get("path")
    return item if isinstance(item, str) else None


def as_editor(picked: Picked) -> dict:
    """The Inpaint editor's value: the picture as background, no strokes yet."""
    return editor_value(picked.image.convert("RGB"))


def editor_value(image: Any) -> dict:
    """An ImageEditor's value for a picture: it as the background, no strokes."""
    return {"background": image, "layers": [], "composite": image}


def as_file(picked: Picked) -> str:
    """PNG info's value: the picture's own file, else a PNG carrying the infotext."""
    if picked.path and picked.path.lower().endswith(".png"):
        return picked.path
    import tempfile

    from webui.engine.core.infotext import pnginfo_for

    out = tempfile.NamedTemporaryFile(prefix="kiri-send-", suffix=".png", delete=False)
    picked.image.save(out, format="PNG", pnginfo=pnginfo_for(picked.infotext) if picked.infotext else None)
    out.close()
    return out.name
