"""The Library tab: search box and filters over every picture made (engine/library), a grid of
thumbnails newest first with paging, and the opened picture large with its parameters and buttons:
Reproduce (fills Text to image from the infotext, as PNG info's button does, hires fix included; an image
to image or inpaint picture fills Image to image instead, with the start picture and mask kept with it; the
note says what it cannot set), Send to, favourite, delete (to the trash) and download; a Trash accordion
lists deleted pictures to restore, and empties the trash. A login sees only its own pictures and trash;
an --admin login all."""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Callable

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.infotext import parse_infotext
from webui.engine.library import NotFound, open_library, reproduce_body

from .common import user_errors

TAB_ID = "library"
PAGE = 48


def _viewer(library, request: gr.Request | None):
    return library.viewer(getattr(request, "username", None) or None)


def render(engine: Engine, tab_block: Any = None, reproduce: tuple[Callable, list] | None = None, send_to=None,
           model_picker: gr.Dropdown | None = None, reproduce_img2img: Any = None, txt2img_control: Any = None) -> None:
    """Builds the tab inside `tab_block` (its gr.Tab: the first page is read when it is opened). Reproduce
    fills Text to image through `reproduce` (PNG info's fill and its outputs) and sets `model_picker` to the
    picture's checkpoint, found by its Model hash."""
    try:
        library = open_library(engine.settings)
    except (OSError, sqlite3.Error) as exc:  # a read-only or full outputs folder: the rest of the app still starts
        gr.Markdown(f"The Library could not open its index in the outputs folder: `{exc}`")
        return

    with gr.Row(equal_height=False):
        query = gr.Textbox(label="Search prompts", placeholder='words, "a phrase", red OR blue, NOT cat', scale=4,
                           elem_id="library-search")
        search = gr.Button("Search", variant="primary", scale=0, min_width=120, elem_id="library-search-button")
    with gr.Accordion("Filters", open=False):
        with gr.Row():
            tab = gr.Dropdown([], label="Tab", value=None, allow_custom_value=True, elem_id="library-tab")
            model = gr.Dropdown([], label="Checkpoint", value=None, allow_custom_value=True, elem_id="library-model")
            sampler = gr.Dropdown([], label="Sampler", value=None, allow_custom_value=True, elem_id="library-sampler")
            lora = gr.Textbox(label="LoRA or embedding", elem_id="library-lora")
        with gr.Row():
            size = gr.Textbox(label="Size (WxH)", placeholder="512x768", elem_id="library-size")
            date_from = gr.Textbox(label="From (YYYY-MM-DD)", elem_id="library-from")
            date_to = gr.Textbox(label="To (YYYY-MM-DD)", elem_id="library-to")
            favourite = gr.Checkbox(label="Favourites only", elem_id="library-favourites")
    status = gr.Markdown(elem_id="library-status")
    with gr.Row():
        with gr.Column(scale=3):
            grid = gr.Gallery(label="Pictures, newest first", columns=6, height=520, allow_preview=False,
                              object_fit="cover", elem_id="library-grid")
            with gr.Row():
                newer = gr.Button("◀ Newer", size="sm", elem_id="library-newer")
                older = gr.Button("Older ▶", size="sm", elem_id="library-older")
                newest = gr.Button("Newest first", size="sm", elem_id="library-newest-first")
        with gr.Column(scale=2):
            picture = gr.Image(label="Picture", type="filepath", interactive=False, height=420, elem_id="library-picture")
            parameters = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="library-parameters")
            with gr.Row():
                reproduce_button = gr.Button("Reproduce", variant="primary", elem_id="library-reproduce")
                favourite_button = gr.Button("☆ Favourite", elem_id="library-favourite")
                like_button = gr.Button("Most like this", elem_id="library-most-like")
                delete_button = gr.Button("Delete", variant="stop", elem_id="library-delete")
                download = gr.DownloadButton("Download", value=None, elem_id="library-download")
            if send_to is not None:  # Image to image, Inpaint, Super-resolution, Segmentation, PNG info
                send_to.menu("library", picture, infotext=parameters)
    with gr.Accordion("Trash", open=False, elem_id="library-trash") as trash_box:
        trashed = gr.CheckboxGroup([], label="Deleted pictures, newest first (yours only)", elem_id="library-trash-list")
        with gr.Row():
            restore_button = gr.Button("Restore selected", size="sm", elem_id="library-restore")
            empty_button = gr.Button("Empty trash (deletes for good)", variant="stop", size="sm",
                                     elem_id="library-empty-trash")
    # page state: the items shown, the cursors of the pages before (to go back), this page's and the next
    items = gr.State([])
    cursors = gr.State({"back": [], "this": "", "next": None})
    opened = gr.State(None)
    like = gr.State(None)  # the id of the picture "Most like this" orders by; None: newest first
    filters = [query, tab, model, sampler, lora, size, date_from, date_to, favourite, like]

    def show(cursor: str, back: list, q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, like_, request):
        viewer = _viewer(library, request)
        if like_ is not None:  # the picture compared with was deleted since: back to newest first
            try:
                library.file(viewer, like_)
            except NotFound:
                like_, cursor, back = None, "", []
        with user_errors():
            page = library.search(viewer, q=q or "", tab=tab_ or "", model=model_ or "", sampler=sampler_ or "",
                                  lora=lora_ or "", size=size_ or "", date_from=from_ or "", date_to=to_ or "",
                                  favourite=bool(fav), cursor=cursor or "", limit=PAGE, similar_to=like_)
        drawn = [(thumb, item) for thumb, item in library.page_thumbnails(page) if thumb is not None]
        shown = [(str(thumb), item["prompt"][:80] or item["name"]) for thumb, item in drawn]
        kept = [item for _, item in drawn]
        choices = library.choices(viewer)
        order = "most like the opened picture first" if like_ is not None else "newest first"
        line = page["progress"] or (f"{len(kept)} pictures on this page, {order}" + (" — more ▶" if page["next"] else "")
                                    if kept else "No pictures match.")
        return (gr.Gallery(value=shown, selected_index=None), kept,
                {"back": back, "this": cursor or "", "next": page["next"]}, line,
                gr.Dropdown(choices=choices["tab"]), gr.Dropdown(choices=choices["model"]),
                gr.Dropdown(choices=choices["sampler"]))

    outputs = [grid, items, cursors, status, tab, model, sampler]

    def first(q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, like_, request: gr.Request):
        return show("", [], q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, like_, request)

    def go_older(state, q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, like_, request: gr.Request):
        if not state.get("next"):
            raise gr.Error("This is the oldest page.")
        return show(state["next"], [*state["back"], state["this"]], q, tab_, model_, sampler_, lora_, size_, from_, to_,
                    fav, like_, request)

    def go_newer(state, q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, like_, request: gr.Request):
        back = state.get("back") or [""]
        return show(back[-1], back[:-1], q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, like_, request)

    search.click(first, filters, outputs, api_visibility="private")
    query.submit(first, filters, outputs, api_visibility="private")
    if tab_block is not None:
        tab_block.select(first, filters, outputs, api_visibility="private")
    favourite.change(first, filters, outputs, api_visibility="private")
    older.click(go_older, [cursors, *filters], outputs, api_visibility="private")
    newer.click(go_newer, [cursors, *filters], outputs, api_visibility="private")

    def most_like(item_id, q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, request: gr.Request):
        if item_id is None:
            raise gr.Error("Open a picture first: its look is what the others are compared with.")
        return item_id, *show("", [], q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, item_id, request)

    def newest_first(q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, request: gr.Request):
        return None, *show("", [], q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, None, request)

    like_button.click(most_like, [opened, *filters[:-1]], [like, *outputs], api_visibility="private")
    newest.click(newest_first, filters[:-1], [like, *outputs], api_visibility="private")

    def select(shown: list, evt: gr.SelectData, request: gr.Request):
        index = evt.index if isinstance(evt.index, int) else 0
        if not 0 <= index < len(shown):
            raise gr.Error("Pick a picture in the grid.")
        with user_errors():
            item = library.item(_viewer(library, request), shown[index]["id"])
        star = "★ Favourite" if item["favourite"] else "☆ Favourite"
        return item["path"], item["infotext"] or "This picture carries no generation parameters.", item["id"], \
            gr.Button(value=star), gr.DownloadButton(value=item["path"])

    grid.select(select, [items], [picture, parameters, opened, favourite_button, download], api_visibility="private")

    def toggle(item_id, request: gr.Request):
        if item_id is None:
            raise gr.Error("Open a picture first.")
        viewer = _viewer(library, request)
        with user_errors():
            on = not library.item(viewer, item_id)["favourite"]
            library.favourite(viewer, item_id, on)
        return gr.Button(value="★ Favourite" if on else "☆ Favourite")

    favourite_button.click(toggle, [opened], [favourite_button], api_visibility="private")

    def delete(item_id, state, q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, like_, request: gr.Request):
        if item_id is None:
            raise gr.Error("Open a picture first.")
        with user_errors():
            library.delete(_viewer(library, request), item_id)
        gr.Info("Moved to the trash: restore it from the Trash below until the trash is emptied.")
        return (None, "", None, gr.DownloadButton(value=None),
                *show(state.get("this", ""), state.get("back", []), q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, like_,
                      request))

    def list_trash(request: gr.Request):
        entries = library.trash(_viewer(library, request))
        choices = [(f"{e['original']} (deleted {time.strftime('%Y-%m-%d %H:%M', time.localtime(e['deleted'] or 0))})",
                    e["name"]) for e in entries]
        return gr.CheckboxGroup(choices=choices, value=[], label=f"Deleted pictures, newest first (yours only): {len(entries)}")

    def restore(names, state, q, tab_, model_, sampler_, lora_, size_, from_, to_, fav, like_, request: gr.Request):
        if not names:
            raise gr.Error("Tick the pictures to restore first.")
        viewer = _viewer(library, request)
        with user_errors():
            for name in names:
                library.restore(viewer, name)
        gr.Info(f"Restored {len(names)} picture{'s' if len(names) > 1 else ''}.")
        return (list_trash(request), *show(state.get("this", ""), state.get("back", []), q, tab_, model_, sampler_, lora_,
                                           size_, from_, to_, fav, like_, request))

    def empty(request: gr.Request):
        removed = library.empty_trash(_viewer(library, request))
        gr.Info(f"Emptied the trash: {removed} picture{'s' if removed != 1 else ''} deleted for good.")
        return list_trash(request)

    delete_button.click(delete, [opened, cursors, *filters], [picture, parameters, opened, download, *outputs],
                        api_visibility="private").then(list_trash, None, trashed, api_visibility="private")
    trash_box.expand(list_trash, None, trashed, api_visibility="private")
    restore_button.click(restore, [trashed, cursors, *filters], [trashed, *outputs], api_visibility="private")
    empty_button.click(empty, None, trashed, api_visibility="private")

    if reproduce is not None:  # PNG info's "Send to Text to image": every field it knows, then that tab
        fill, targets = reproduce
        img2img_fill = getattr(reproduce_img2img, "reproduce", None)
        img2img_targets = list(getattr(reproduce_img2img, "reproduce_targets", None) or [])

        def fill_and_note(text: str, item_id=None, request: gr.Request = None):
            made, unit_gaps = (_reproduce_with_units(engine, library, _viewer(library, request), item_id)
                               if item_id is not None else (reproduce_body(text or "", "txt2img", engine.catalog), []))
            units = made["body"].get("alwayson_scripts", {}).get("controlnet", {}).get("args", [])
            if item_id is not None and img2img_fill is not None and made["endpoint"] == "/sdapi/v1/img2img":
                # an image to image picture goes back to that tab, with the start picture (and mask) kept with it
                updates = img2img_fill(made["body"], parse_infotext(text or "").params)
                missing = ["Its start picture was not kept with it (made before Kiri kept them, or by another tool): "
                           "add it in Image to image before Generate." for n in made["notes"] if "source picture" in n]
                missing += unit_gaps or reproduce_gaps(text, img2img=True, units_kept=item_id is not None)
                panel = getattr(reproduce_img2img, "control", None)
            else:
                updates = fill(text)
                missing = unit_gaps or reproduce_gaps(text, units_kept=item_id is not None)
                panel = txt2img_control
            if panel is not None and item_id is not None:  # the picture's units back, the panel's others off
                updates.update(panel.updates_from_args(engine, units))
            if model_picker is not None:  # the checkpoint by its hash (renamed since), else by its name
                entry = engine.catalog.find(made["body"].get("override_settings", {}).get("sd_model_checkpoint") or "")
                if entry is not None:
                    updates[model_picker] = engine.catalog.title(entry)
                missing += [n[0].upper() + n[1:] + "." for n in made["notes"] if "checkpoint" in n or "Model hash" in n]
            updates[status] = "**Reproduce:** " + " ".join(missing) if missing else ""
            return updates

        panels = [p for p in (txt2img_control, getattr(reproduce_img2img, "control", None)) if p is not None]
        outputs_of_reproduce = list(dict.fromkeys([*targets, *img2img_targets, *([model_picker] if model_picker else []),
                                                  *(c for p in panels for c in p.components()), status]))
        reproduce_button.click(fill_and_note, [parameters, opened], outputs_of_reproduce, api_visibility="private",
                               queue=False)


def _reproduce_with_units(engine: Engine, library: Any, viewer: Any, item_id: Any) -> tuple[dict, list[str]]:
    """Library.reproduce with the add-ons' units (ControlNet, IP-Adapter) and their kept pictures; where a
    kept control picture is gone, the body without the units, and the gap said. Any other refusal (a start
    picture that is gone: the picture cannot be made without it) is the user's error."""
    from webui.engine.core.errors import InvalidRequest

    with user_errors():
        try:
            return library.reproduce(viewer, item_id, engine.catalog, engine.addons), []
        except InvalidRequest as exc:
            if not exc.field.startswith("alwayson_scripts"):
                raise
            gap = f"{exc} Add it in the ControlNet panel before Generate."
        return library.reproduce(viewer, item_id, engine.catalog), [gap]


def reproduce_gaps(infotext: str, img2img: bool = False, units_kept: bool = False) -> list[str]:
    """What Reproduce cannot set from a picture's infotext, said plainly: ControlNet units' control pictures
    (and IP-Adapter's) are not in it unless kept with the picture (`units_kept`: Reproduce from the Library,
    which sets the units whose pictures were kept), and an image to image picture starts from a picture of
    its own (unless `img2img`: it went to Image to image with the start picture kept with it)."""
    params = parse_infotext(infotext or "").params
    gaps = []
    units = sorted(k for k in params if k.startswith("ControlNet ") and k.split(" ", 1)[1].isdigit()
                   and not str(params[k]).startswith("Skipped"))
    if units_kept:  # a unit kept with its picture is set; in image to image one without reads the init image
        units = [] if img2img else [k for k in units if f"{k} image hash" not in params]
    if units:
        gaps.append(f"This picture used {len(units)} ControlNet unit{'s' if len(units) > 1 else ''} "
                    f"({', '.join(units)}); their control pictures are not in its parameters, so add them in the "
                    "ControlNet panel before Generate, with the module, model and weight shown in Parameters.")
    made_by_img2img = "Init image hash" in params or ("Denoising strength" in params
                                                      and not any(k.startswith("Hires ") for k in params))
    if made_by_img2img and not img2img:
        gaps.append("This picture was made by image to image: its start picture is not set in Text to image "
                    "(the API's reproduce, /kiri/v1/library/{id}/reproduce, returns it when it was kept).")
    return gaps
