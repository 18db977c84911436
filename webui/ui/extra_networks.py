"""The Extra networks panel under a generation tab (AUTOMATIC1111's cards): LoRAs, textual inversion
embeddings and checkpoints as cards with their preview picture (`<name>.preview.png` beside the file,
else a neutral placeholder) and metadata, a kind selector, a search box that filters as you type and a
refresh button. A click on a card puts its tag in the prompt (`<lora:name:W>`, W the LoRA's preferred
weight or the `extra_networks_default_multiplier` setting; an embedding's word) or selects a checkpoint
in the model picker; "Use the selected result as preview" writes the result picture beside the card's
file (webui/engine/models/previews.py). Previews reach the browser as gallery values, which Gradio
copies into its own cache: the file route is not widened to the models folders."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.owners import login_folder, output_login
from webui.engine.models.previews import preview_of, set_preview

from .common import user_errors
from .theme import REFRESH

LORA, EMBEDDING, CHECKPOINT = "LoRA", "Textual Inversion", "Checkpoints"
KINDS = (LORA, EMBEDDING, CHECKPOINT)
THUMB = 192
# cards of a fixed width however few there are (the gallery otherwise stretches two cards over the row)
CARD_CSS = ("<style>#PREFIX-extra-cards .grid-container { grid-template-columns: repeat(auto-fill, minmax(130px, 150px))"
            " !important; grid-auto-rows: 170px !important; }</style>")
MAX_CACHED = 1024
_thumbs: dict[tuple[str, float], Any] = {}  # small copies of preview files, the same for every user
_thumbs_lock = threading.Lock()


@dataclass(frozen=True)
class Card:
    kind: str
    name: str
    tag: str  # what a click inserts: a prompt tag, or the checkpoint's dropdown title
    caption: str
    details: str  # Markdown: the metadata
    path: str
    preview: str | None
    search: str  # lower-case text the search box matches


def _size(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def _weight(value: float) -> str:
    return f"{value:g}"


def _top_tags(metadata: dict[str, Any], count: int = 8) -> list[str]:
    """The most frequent training tags of a kohya LoRA (ss_tag_frequency: {folder: {tag: n}})."""
    totals: dict[str, int] = {}
    frequency = metadata.get("ss_tag_frequency")
    if isinstance(frequency, dict):
        for tags in frequency.values():
            if isinstance(tags, dict):
                for tag, n in tags.items():
                    try:
                        totals[str(tag).strip()] = totals.get(str(tag).strip(), 0) + int(n)
                    except (TypeError, ValueError):
                        continue
    return [t for t, _ in sorted(totals.items(), key=lambda item: -item[1])[:count] if t]


def lora_cards(engine: Engine) -> list[Card]:
    from webui.engine.lora import SETTING, list_loras

    default = getattr(engine.settings, SETTING, 1.0)
    cards = []
    for item in list_loras(engine.catalog):
        weight = item.get("preferred_weight") or default
        tags = _top_tags(item.get("metadata") or {})
        entry = engine.catalog.find_of_kind("lora", item["name"])
        family = entry.family_label if entry is not None else (item.get("family") or "unknown")
        lines = [f"**{item['name']}** (LoRA) · {family}", f"alias: {item['alias']}",
                 f"weight: {_weight(weight)}" + (" (preferred)" if item.get("preferred_weight") else " (default)")]
        if tags:
            lines.append("training tags: " + ", ".join(tags))
        if item.get("problem"):
            lines.append(f"problem: {item['problem']}")
        cards.append(Card(LORA, item["name"], f"<lora:{item['name']}:{_weight(weight)}>", f"{item['name']} · {family}",
                          "  \n".join(lines), item["path"], item.get("preview"),
                          " ".join([item["name"], str(item["alias"]), family, *tags]).lower()))
    return cards


def embedding_cards(engine: Engine) -> list[Card]:
    from webui.engine.embeddings import list_embeddings
    from webui.engine.models.families import FAMILIES

    cards = []
    for item in list_embeddings(engine):
        family = FAMILIES.get(item.get("family") or "", item.get("family") or "unknown")
        vectors = item.get("vectors")
        lines = [f"**{item['name']}** (embedding) · {family}",
                 f"vectors: {vectors}" if vectors is not None else "vectors: unreadable"]
        if item.get("error"):
            lines.append(f"problem: {item['error']}")
        caption = f"{item['name']} · {family}" + (f" · {vectors} vec" if vectors else "")
        cards.append(Card(EMBEDDING, item["name"], item["name"], caption, "  \n".join(lines), item["path"],
                          item.get("preview"), f"{item['name']} {family}".lower()))
    return cards


def checkpoint_cards(engine: Engine) -> list[Card]:
    cards = []
    for entry in engine.catalog.entries:
        preview = preview_of(entry.path)
        lines = [f"**{entry.name}** (checkpoint) · {entry.kind_label}", f"size: {_size(entry.size_bytes)}",
                 f"format: {entry.format}"]
        if entry.problem:
            lines.append(f"problem: {entry.problem}")
        cards.append(Card(CHECKPOINT, entry.name, engine.catalog.title(entry), f"{entry.name} · {entry.kind_label}",
                          "  \n".join(lines), str(entry.path), str(preview) if preview else None,
                          f"{entry.name} {entry.family_label}".lower()))
    return cards


def cards_of(engine: Engine, kind: str, search: str = "") -> list[Card]:
    """The cards of one kind whose name, alias, family or training tags hold every word of `search`."""
    if not engine.catalog.entries:
        engine.catalog.scan()
    found = {LORA: lora_cards, EMBEDDING: embedding_cards, CHECKPOINT: checkpoint_cards}.get(kind, lora_cards)(engine)
    words = (search or "").lower().split()
    return [c for c in found if all(w in c.search for w in words)]


def insert_tag(prompt: str | None, tag: str) -> str:
    """The prompt with `tag` appended (after a space), unless it is there already."""
    text = prompt or ""
    if tag in text:
        return text
    return text + ("" if not text or text[-1] in " ,\n" else " ") + tag


def _placeholder():
    from PIL import Image

    return Image.new("RGB", (THUMB, THUMB), (110, 110, 118))


def _thumbnail(path: str | None):
    """A small copy of the preview picture (cached by file and time), or the placeholder when there is
    none or it cannot be read."""
    from PIL import Image

    if not path:
        return _placeholder()
    try:
        key = (path, Path(path).stat().st_mtime)
        with _thumbs_lock:
            if key in _thumbs:
                return _thumbs[key]
        with Image.open(path) as opened:
            opened.thumbnail((THUMB, THUMB))
            image = opened.convert("RGB")
    except Exception:  # noqa: BLE001 - a broken preview shows as the placeholder
        return _placeholder()
    with _thumbs_lock:
        if len(_thumbs) > MAX_CACHED:  # replaced previews leave their old keys behind: start again
            _thumbs.clear()
        _thumbs[key] = image
    return image


def _shown(cards: list[Card]) -> tuple[Any, list[dict], str]:
    value = [(_thumbnail(c.preview), c.caption) for c in cards]
    note = f"{len(cards)} card(s)" if cards else "No cards: put files in the kind's folder and press " + REFRESH
    return gr.Gallery(value=value, selected_index=None), [asdict(c) for c in cards], note


def _picture_of(gallery: Any, index: int | None) -> Any:
    """The path (or image) of the selected result in a gallery value, or None."""
    items = list(gallery or [])
    if not items:
        return None
    item = items[index if isinstance(index, int) and 0 <= index < len(items) else 0]
    if isinstance(item, (tuple, list)):
        item = item[0]
    if isinstance(item, dict):
        item = item.get("image", item)
        item = item.get("path", item) if isinstance(item, dict) else item
    return item


def render(engine: Engine, prefix: str, prompt: gr.Textbox, results: gr.Gallery, model_picker: gr.Dropdown) -> None:
    """The panel (an accordion) in the tab `prefix`: cards insert into `prompt`, checkpoint cards set
    `model_picker`, and the result selected in `results` can become a card's preview."""
    with gr.Accordion("Extra networks: LoRA, embeddings, checkpoints", open=False,
                      elem_id=f"{prefix}-extra-networks") as panel:
        with gr.Row(equal_height=True):
            kind = gr.Radio(list(KINDS), value=LORA, label="Kind", scale=3, elem_id=f"{prefix}-extra-kind")
            search = gr.Textbox(label="Search", placeholder="name, alias, family or training tag", scale=3,
                                elem_id=f"{prefix}-extra-search")
            refresh = gr.Button(REFRESH, size="sm", min_width=40, scale=0, elem_id=f"{prefix}-extra-refresh")
        note = gr.Markdown(elem_id=f"{prefix}-extra-note")
        gr.HTML(CARD_CSS.replace("PREFIX", prefix), padding=False)
        cards = gr.Gallery(label="Cards (a click puts the tag in the prompt)", columns=6, height=300, allow_preview=False,
                           object_fit="cover", interactive=False, elem_id=f"{prefix}-extra-cards")
        details = gr.Markdown(elem_id=f"{prefix}-extra-details")
        set_preview_button = gr.Button("Use the selected result as this card's preview", size="sm",
                                       elem_id=f"{prefix}-extra-set-preview")
    shown = gr.State([])  # the cards in the gallery, in order
    chosen = gr.State(None)  # the card last clicked
    result_index = gr.State(0)  # the result selected in the results gallery

    def listed(kind_name: str, text: str):
        return _shown(cards_of(engine, kind_name, text))

    def rescanned(kind_name: str, text: str):
        engine.catalog.scan()
        return listed(kind_name, text)

    def clicked(listing: list[dict], text: str, evt: gr.SelectData):
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(listing):
            return gr.skip(), gr.skip(), gr.skip(), None
        card = listing[evt.index]
        if card["kind"] == CHECKPOINT:
            return gr.skip(), gr.update(value=card["tag"]), card["details"], card
        return insert_tag(text, card["tag"]), gr.skip(), card["details"], card

    def use_result(card: dict | None, gallery: Any, index: int, kind_name: str, text: str, request: gr.Request):
        if not card:
            raise gr.Error("Click a card first: its preview is the one replaced.")
        picture = _picture_of(gallery, index)
        if picture is None:
            raise gr.Error("No result to use: generate an image first.")
        login = getattr(request, "username", None)
        if login and isinstance(picture, (str, Path)):  # with logins, only one's own outputs
            inside, folder = output_login(engine.settings.outputs_dir, picture)
            if inside and folder != login_folder(login):
                raise gr.Error("That picture is another user's output.")
        with user_errors():
            written = set_preview(engine.catalog, card["path"], picture)
        gr.Info(f"Saved {written.name}.")
        return listed(kind_name, text)

    def selected_result(evt: gr.SelectData) -> int:
        return evt.index if isinstance(evt.index, int) else 0

    private = dict(api_visibility="private", queue=False)
    outputs = [cards, shown, note]
    kind.change(listed, [kind, search], outputs, **private)
    search.change(listed, [kind, search], outputs, show_progress="hidden", **private)
    refresh.click(rescanned, [kind, search], outputs, **private)
    cards.select(clicked, [shown, prompt], [prompt, model_picker, details, chosen], **private)
    results.select(selected_result, None, result_index, **private)
    set_preview_button.click(use_result, [chosen, results, result_index, kind, search], outputs, **private)
    # the cards are read when the panel opens (and on refresh), not when the app is built
    panel.expand(listed, [kind, search], outputs, **private)
