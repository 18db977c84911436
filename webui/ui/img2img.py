"""The Image to image / Inpaint tab: an init image (or a brush mask, or a bigger canvas) and the
same generation settings as Text to image."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.errors import InvalidRequest, KiriError
from webui.engine.core.images import to_rgb
from webui.engine.generation.img2img import MASKED_CONTENT, MAX_MASK_BLUR, MAX_OUTPAINT, MAX_PADDING, RESIZE_MODES, Img2ImgRequest, outpaint_canvas
from webui.engine.core.jobs import Job
from webui.engine.generation.defaults import model_defaults
from webui.engine.segment import SegmentRequest, mask_tools, segment

from . import controlnet, extra_networks
from . import detailer as detailer_ui
from . import styles as styles_ui
from .common import JOB_EVENT, QUIET_PROGRESS, as_image, owner_of, progress_line, stream_job, user_errors
from .components import RESULTS_ONLY, finished_outputs, generation_settings, request_fields, vae_choice
from .send_to import SendTo, as_editor, editor_value
from .token_counter import token_counter
from .txt2img import Txt2ImgTab, _defaults_plain, _model_defaults, defaults_update

TAB_ID = "img2img"
MODES = ("img2img", "inpaint", "outpaint")


@dataclass
class Img2ImgTab:
    """The components other tabs fill in (Segmentation's "Send mask to Inpaint")."""

    editor: gr.ImageEditor
    mask_upload: gr.Image
    modes: gr.Tabs
    mode: gr.Radio
    gallery: gr.Gallery  # the results
    tab_id: str = TAB_ID
    # The Library's Reproduce: sets every field from a /sdapi/v1/img2img body (the one Library.reproduce
    # makes, with the kept init image and mask) and opens the tab; `reproduce_targets` are its outputs.
    reproduce: Any = None
    reproduce_targets: list = None
    control: Any = None  # the ControlNet / IP-Adapter panel (controlnet.ControlPanel): Reproduce sets its units


# The brush paints a half-transparent colour, so the picture stays visible under the mask; what it
# paints is still the mask (editor_mask keeps every pixel with any alpha).
MASK_COLOR = ("#ff2d78", 0.5)
# The editor's brush size is a radius in picture pixels: 12 draws strokes 24 px wide, a tenth of a
# 256 px picture. BRUSH_JS resizes it to each picture uploaded, dropped or pasted into the editor,
# or sent from another tab.
# (An update of the editor from the server would redraw its canvas and can lose the picture or the
# first strokes, so the page sets the editor's own Brush Size control instead.)
BRUSH_RADIUS = 12

# A stroke about a tenth of the picture's side: radius = side / 20, set through the editor's Brush
# Size slider (its value is a radius in picture pixels, whatever the zoom), once the editor shows it.
BRUSH_JS = """
() => {
  if (window.kiriBrushFollows) return;
  window.kiriBrushFollows = true;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const resize = async (editor, file) => {
    if (!file || !(file.type || '').startsWith('image/')) return;
    let side;
    try {
      const bitmap = await createImageBitmap(file);
      side = Math.max(bitmap.width, bitmap.height);
      bitmap.close();
    } catch (e) { return; }
    await fit(editor, side);
  };
  // A picture sent from another tab arrives from the server: Send to sets the tab's width and height
  // to its size, then calls this (send_to.py, the Inpaint target's `after_js`).
  window.kiriBrushAfterSend = async () => {
    const size = (id) => Number((document.querySelector(`#${id} input[type=number]`) || {}).value) || 0;
    let cleared = false;
    for (let i = 0; i < 40; i++) {  // the tab mounts, then the editor redraws as the picture comes in
      await sleep(250);
      const editor = document.querySelector('#inpaint-editor');
      const side = Math.max(size('img2img-width'), size('img2img-height'));
      if (!editor || !side) continue;
      if (!cleared) { delete editor.dataset.kiriBrush; cleared = true; }  // an earlier upload's size
      await fit(editor, side);
      if (editor.dataset.kiriBrush) return;
    }
  };
  const fit = async (editor, side) => {
    const radius = Math.max(1, Math.round(side / 20));
    for (let i = 0; i < 100; i++) {  // the Brush Size button shows once the picture is in
      const button = editor.querySelector('button[aria-label="Brush Size"]');
      if (button) {
        await sleep(200);  // let the editor finish taking the picture in
        const open = () => editor.querySelector('input[type=range]');
        if (!open()) button.click();
        for (let j = 0; j < 20 && !open(); j++) await sleep(25);
        const range = open();
        if (!range) return;
        range.value = String(Math.min(Number(range.max) || 100, radius));
        range.dispatchEvent(new Event('input', {bubbles: true}));
        range.dispatchEvent(new Event('change', {bubbles: true}));
        await sleep(25);
        for (const kind of ['pointerdown', 'mousedown']) {  // close the popover: a press outside it
          if (open()) document.body.dispatchEvent(new MouseEvent(kind, {bubbles: true}));
        }
        editor.dataset.kiriBrush = String(radius);
        return;
      }
      await sleep(100);
    }
  };
  const editorOf = (el) => el && el.closest ? el.closest('#inpaint-editor') : null;
  document.addEventListener('change', (event) => {
    const editor = editorOf(event.target);
    if (editor && event.target.type === 'file') resize(editor, event.target.files && event.target.files[0]);
  }, true);
  for (const kind of ['drop', 'paste']) {
    document.addEventListener(kind, (event) => {
      const editor = editorOf(event.target);
      const data = event.dataTransfer || event.clipboardData;
      if (editor && data && data.files && data.files.length) resize(editor, data.files[0]);
    }, true);
  }
}
"""


def mask_brush() -> gr.Brush:
    return gr.Brush(colors=[MASK_COLOR], default_color=MASK_COLOR, color_mode="fixed", default_size=BRUSH_RADIUS)


def editor_mask(value: Any):
    """The painted strokes of a gr.ImageEditor value as an L mask (white where painted), or None."""
    from PIL import ImageChops

    if not isinstance(value, dict) or value.get("background") is None:
        return None
    mask = None
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A").point(lambda v: 255 if v else 0)
        mask = alpha if mask is None else ImageChops.lighter(mask, alpha)
    return mask


def mask_from_words(engine: Engine, editor: Any, words: str, owner: str):
    """A mask of what the words name in the Inpaint picture (all the masks found, together)."""
    image = as_image(editor)
    if image is None:
        raise InvalidRequest("init_image", "upload a picture to the Inpaint editor first")
    if not (words or "").strip():
        raise InvalidRequest("prompt", "type what to mask, e.g. \"the red circle\"")
    result = segment(engine, SegmentRequest(image, prompt=words), owner)
    if not result.masks:
        raise InvalidRequest("prompt", f"{result.info['model']} found nothing for {words!r}: try other words")
    return mask_tools.to_image(mask_tools.union(result.arrays()))


def render(engine: Engine, model_picker: gr.Dropdown, t2i: Txt2ImgTab | None = None, tabs: gr.Tabs | None = None,
           send: SendTo | None = None) -> Img2ImgTab:
    samplers, sampler, size, _ = _model_defaults(engine)
    # A hidden radio rather than gr.State, so API clients can choose the mode too.
    mode = gr.Radio(list(MODES), value="img2img", visible=False, label="Mode", elem_id="img2img-mode")
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="img2img-prompt")
            token_counter(engine, prompt, "img2img-token-counter")
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="img2img-negative")
            token_counter(engine, negative, "img2img-negative-token-counter")
            styles = styles_ui.render(engine, "img2img", prompt, negative).dropdown
            with gr.Tabs() as modes:
                with gr.Tab("Image to image", id="img2img") as tab_img2img:
                    init_image = gr.Image(label="Init image", type="pil", image_mode=None, sources=["upload", "clipboard"],
                                          height=360, elem_id="img2img-image")
                with gr.Tab("Inpaint", id="inpaint") as tab_inpaint:
                    editor = gr.ImageEditor(label="Image: paint the part to repaint", type="pil", height=360,
                                            brush=mask_brush(),
                                            eraser=gr.Eraser(), layers=False, format="png", elem_id="inpaint-editor")
                    mask_upload = gr.Image(label="Or upload a mask (white = repaint); it replaces the brush strokes",
                                           type="pil", image_mode=None, height=160, elem_id="inpaint-mask")
                    with gr.Row():
                        mask_words = gr.Textbox(label="Or make the mask from words", placeholder="the red circle",
                                                elem_id="inpaint-mask-words", scale=4)
                        mask_words_button = gr.Button("Mask it", size="sm", elem_id="inpaint-mask-words-run", scale=1)
                with gr.Tab("Outpaint", id="outpaint") as tab_outpaint:
                    outpaint_image = gr.Image(label="Image to extend", type="pil", image_mode=None, height=300,
                                              elem_id="outpaint-image")
                    with gr.Row():
                        left = gr.Slider(0, MAX_OUTPAINT, value=0, step=8, label="Left (px)")
                        right = gr.Slider(0, MAX_OUTPAINT, value=128, step=8, label="Right (px)")
                        up = gr.Slider(0, MAX_OUTPAINT, value=0, step=8, label="Up (px)")
                        down = gr.Slider(0, MAX_OUTPAINT, value=0, step=8, label="Down (px)")
                    gr.Markdown("The new area is pre-filled from the edges and repainted with *Only masked*.")
            with gr.Accordion("Mask settings (Inpaint and Outpaint)", open=False):
                with gr.Row():
                    mask_blur = gr.Slider(0, MAX_MASK_BLUR, value=4, step=1, label="Mask blur")
                    invert = gr.Radio(["Inpaint masked", "Inpaint not masked"], value="Inpaint masked", label="Mask mode")
                fill = gr.Radio(list(MASKED_CONTENT), value="original", label="Masked content")
                with gr.Row():
                    area = gr.Radio(["Whole picture", "Only masked"], value="Whole picture", label="Inpaint area")
                    padding = gr.Slider(0, MAX_PADDING, value=32, step=4, label="Only masked padding, pixels")
            resize_mode = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], label="Resize mode", type="index",
                                   elem_id="img2img-resize-mode")
            strength = gr.Slider(0, 1, value=0.75, step=0.01, label="Denoising strength", elem_id="img2img-strength")
            first_defaults = model_defaults(engine)
            gen = generation_settings("img2img", samplers, sampler, size, first_defaults)
            defaults_note = gr.Markdown(first_defaults.note, visible=bool(first_defaults.note), elem_id="img2img-model-defaults")
            defaults_state = gr.State(_defaults_plain(first_defaults))
            gen.vae = vae_choice("img2img", engine.catalog)
            control = controlnet.render(engine, "img2img", model_picker, size=(gen.width, gen.height), init_image=init_image)
            detail = detailer_ui.render(engine, "img2img")
        with gr.Column(scale=4, elem_classes=["kiri-output"]):
            with gr.Row(elem_classes=["kiri-actions"]):
                generate = gr.Button("Generate", variant="primary", elem_id="img2img-generate", scale=3, elem_classes=["kiri-generate"])
                interrupt = gr.Button("Interrupt", variant="stop", scale=1, elem_id="img2img-interrupt", elem_classes=["kiri-interrupt"])
            gallery = gr.Gallery(label="Images", columns=4, height=420, object_fit="contain", preview=True, format="png",
                                 elem_id="img2img-gallery", **RESULTS_ONLY)
            status = gr.Markdown(elem_id="img2img-status", elem_classes=["kiri-status"])
            menu = send.menu("img2img", gallery) if send is not None else None
            infotext = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id="img2img-infotext")
            if menu is not None:
                menu.infotext = infotext

    for tab, name in ((tab_img2img, "img2img"), (tab_inpaint, "inpaint"), (tab_outpaint, "outpaint")):
        tab.select(lambda name=name: name, None, mode, api_visibility="private", queue=False)

    def run(mode, prompt, negative_prompt, init_image, editor, mask_upload, outpaint_image, left, right, up, down,
            mask_blur, invert, fill, area, padding, resize_mode, strength, request: gr.Request,
            progress: gr.Progress = gr.Progress(), **settings):
        """Image to image, inpaint or outpaint; yields live previews, then the images, the first infotext and a status."""
        job = Job(kind="img2img", owner=owner_of(request))
        started = time.perf_counter()
        chosen = list(settings.pop("styles", None) or [])
        with user_errors():
            units = control.pop_addons(settings)
            units.update(detail.pop_addons(settings))
            fields: dict[str, Any] = dict(
                prompt=prompt or "", negative_prompt=negative_prompt or "", styles=chosen, **request_fields(**settings),
                denoising_strength=float(strength),
                resize_mode=int(resize_mode or 0), mask_blur=int(mask_blur),
                inpainting_mask_invert=int(invert == "Inpaint not masked"), inpainting_fill=MASKED_CONTENT.index(fill),
                inpaint_full_res=area == "Only masked", inpaint_full_res_padding=int(padding),
            )
            fields["addons"].update(units)
            if mode == "inpaint":
                image = as_image(editor)
                # image_mode=None above: Gradio's own convert would clip 16-bit and float uploads to white.
                mask = to_rgb(mask_upload, "mask").convert("L") if mask_upload is not None else editor_mask(editor)
                if image is None:
                    raise InvalidRequest("init_image", "upload an image to the Inpaint editor first")
                if mask is None:
                    raise InvalidRequest("mask", "paint over the part to repaint with the brush, or upload a mask")
                fields.update(init_image=image, mask=mask)
            elif mode == "outpaint":
                image = as_image(outpaint_image)
                if image is None:
                    raise InvalidRequest("init_image", "upload the image to extend first")
                canvas, mask = outpaint_canvas(image, int(left), int(right), int(up), int(down))
                fields.update(init_image=canvas, mask=mask, inpaint_full_res=True)
            else:
                fields.update(init_image=as_image(init_image))
            req = Img2ImgRequest(**fields)
            result = yield from stream_job(lambda: engine.img2img(req, job), job, progress,
                                           lambda preview: ([preview], "", progress_line(job)),
                                           lambda: (gr.skip(), gr.skip(), progress_line(job)))
        for warning in result.warnings:
            gr.Warning(warning)
        yield finished_outputs(result, job, time.perf_counter() - started)

    inputs = dict(mode=mode, prompt=prompt, negative_prompt=negative, init_image=init_image, editor=editor,
                  mask_upload=mask_upload, outpaint_image=outpaint_image, left=left, right=right, up=up, down=down,
                  mask_blur=mask_blur, invert=invert, fill=fill, area=area, padding=padding, resize_mode=resize_mode,
                  strength=strength, **gen.inputs(), model=model_picker, styles=styles, **control.inputs(), **detail.inputs())
    generate.click(run, inputs_kwargs=inputs, outputs=[gallery, infotext, status], api_name="img2img", **JOB_EVENT,
                   **QUIET_PROGRESS)

    def stop(request: gr.Request) -> str:
        return "Interrupting after the current step…" if engine.interrupt(owner_of(request)) else "Nothing is running."

    interrupt.click(stop, None, status, api_visibility="private", queue=False)

    def on_model_change(title: str | None, text, *values):
        entry = engine.catalog.find(title) if title else None
        prediction = entry.prediction if entry else "epsilon"
        first, *rest = defaults_update(engine, title, text, *values, model_changed=True)
        return (gr.update(choices=engine.samplers.names(prediction), value=first["value"]), *rest)

    # as on Text to image: the picked model's and the prompt's few-step LoRA's sampler, steps and CFG
    defaults_inputs = [gen.sampler, gen.schedule, gen.steps, gen.cfg_scale, defaults_state]
    defaults_outputs = [gen.sampler, gen.schedule, gen.steps, gen.cfg_scale, defaults_note, defaults_state]
    model_picker.change(on_model_change, [model_picker, prompt, *defaults_inputs], defaults_outputs,
                        api_visibility="private", queue=False)
    prompt.change(lambda title, text, *values: defaults_update(engine, title, text, *values),
                  [model_picker, prompt, *defaults_inputs], defaults_outputs, queue=False, show_progress="hidden",
                  api_visibility="private", trigger_mode="always_last")
    if send is not None:
        fields = dict(prompt=prompt, negative_prompt=negative, styles=styles, seed=gen.seed, sampler_name=gen.sampler,
                      scheduler=gen.schedule, steps=gen.steps, cfg_scale=gen.cfg_scale, width=gen.width, height=gen.height)
        for label, media, name, value in (("Image to image", init_image, "img2img", None),
                                          ("Inpaint", editor, "inpaint", as_editor),
                                          ("Outpaint", outpaint_image, "outpaint", None)):
            after = "() => window.kiriBrushAfterSend && window.kiriBrushAfterSend()" if label == "Inpaint" else None
            send.target(label, media, TAB_ID, fields, [(modes, name), (mode, name)], value, after_js=after)

    def words_to_mask(editor_value, words, request: gr.Request):
        with user_errors():
            return mask_from_words(engine, editor_value, words, owner_of(request))

    mask_words_button.click(words_to_mask, [editor, mask_words], mask_upload, api_visibility="private", **JOB_EVENT)
    extra_networks.render(engine, "img2img", prompt, gallery, model_picker)

    def reproduce(body: dict, params: dict) -> dict:
        """Every field of the tab from an img2img request body, with its init image (and mask: then in the
        Inpaint editor, as an uploaded mask, so the strokes cannot differ), so Generate makes it again."""
        import base64

        from webui.engine.core.limits import decode_image

        def picture(data, field):
            return decode_image(base64.b64decode(data), field, limit=engine.settings.max_pixels) if data else None

        init = picture((body.get("init_images") or [None])[0], "init_images")
        mask = picture(body.get("mask"), "mask")
        text, negative_text, chosen = styles_ui.restore(engine, body.get("prompt", ""), body.get("negative_prompt", ""))
        inpaint = mask is not None
        updates = {prompt: text, negative: negative_text, styles: chosen}
        if init is not None:  # else (made before Kiri kept init images) the tab keeps its picture; the note says so
            updates.update({
                mode: "inpaint" if inpaint else "img2img", modes: gr.Tabs(selected="inpaint" if inpaint else "img2img"),
                init_image: None if inpaint else init, editor: editor_value(init) if inpaint else None,
                mask_upload: mask})
        updates.update({
            strength: body.get("denoising_strength", 0.75), resize_mode: RESIZE_MODES[int(body.get("resize_mode", 0))],
            mask_blur: body.get("mask_blur", 4),
            invert: "Inpaint not masked" if body.get("inpainting_mask_invert") else "Inpaint masked",
            fill: MASKED_CONTENT[body.get("inpainting_fill", 1)],
            area: "Only masked" if body.get("inpaint_full_res") else "Whole picture",
            padding: body.get("inpaint_full_res_padding", 32),
            gen.steps: body.get("steps", gr.update()), gen.cfg_scale: body.get("cfg_scale", gr.update()),
            gen.seed: body.get("seed", gr.update()), gen.width: body.get("width", gr.update()),
            gen.height: body.get("height", gr.update()),
            gen.clip_skip: (body.get("override_settings") or {}).get("CLIP_stop_at_last_layers", 1),
            gen.batch_count: 1, gen.batch_size: 1,
        })
        if tabs is not None:
            updates[tabs] = gr.Tabs(selected=TAB_ID)
        named = (body.get("override_settings") or {}).get("sd_vae")
        entry = engine.catalog.find_of_kind("vae", named) if named else None
        updates[gen.vae] = entry.name if entry is not None else ""
        if body.get("sampler_name"):
            try:
                found, schedule = engine.samplers.resolve(str(body["sampler_name"]), body.get("scheduler"))
                updates[gen.sampler], updates[gen.schedule] = found.name, schedule
            except KiriError:
                gr.Warning(f"Sampler {body['sampler_name']!r} is not available in Kiri; keeping the current one.")
        updates.update(detail.updates_from_infotext(params))
        return updates

    reproduce_targets = [prompt, negative, styles, mode, modes, init_image, editor, mask_upload, strength, resize_mode,
                         mask_blur, invert, fill, area, padding, gen.steps, gen.cfg_scale, gen.seed, gen.width,
                         gen.height, gen.clip_skip, gen.batch_count, gen.batch_size, gen.vae, gen.sampler, gen.schedule,
                         *detail.inputs().values(), *([tabs] if tabs is not None else [])]
    return Img2ImgTab(editor, mask_upload, modes, mode, gallery, reproduce=reproduce, reproduce_targets=reproduce_targets,
                      control=control)

