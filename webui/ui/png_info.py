"""The PNG info tab: read the generation parameters out of an image, send them to Text to image."""

from __future__ import annotations

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.errors import KiriError
from webui.engine.core.infotext import infotext_to_request_fields, parse_infotext, read_infotext

from .styles import restore
from .txt2img import Txt2ImgTab, hires_from_infotext


def read_parameters(path: str | None) -> tuple[str, dict]:
    """Infotext of an uploaded image (Kiri's or AUTOMATIC1111's) and its parsed fields."""
    from PIL import Image, UnidentifiedImageError

    if not path:
        return "", {}
    try:
        with Image.open(path) as image:
            text = read_infotext(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise gr.Error(f"this file is not an image Kiri can read ({exc})") from exc
    if not text:
        return "This image carries no generation parameters.", {}
    info = parse_infotext(text)
    fields = {"Prompt": info.prompt, "Negative prompt": info.negative_prompt, **info.params}
    return text, fields


def render(engine: Engine, txt2img: Txt2ImgTab, tabs: gr.Tabs, txt2img_tab_id: str, send_to=None) -> tuple:
    """Builds the tab; returns (fill, targets): the handler that sets Text to image from an infotext and
    switches to it, and its outputs, for other tabs' buttons (the Library's Reproduce)."""
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], elem_id="pnginfo-image")
        with gr.Column():
            raw = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="pnginfo-text")
            fields = gr.JSON(label="Fields")
            send = gr.Button("Send to Text to image", elem_id="pnginfo-send")

    image.change(read_parameters, image, [raw, fields], api_name="png_info")
    if send_to is not None:
        from .send_to import as_file

        send_to.target("PNG info", image, "png_info", value=as_file)

    def send_to_txt2img(text: str):
        parsed = parse_infotext(text or "")
        values = infotext_to_request_fields(parsed)
        if not values.get("prompt"):
            raise gr.Error("there are no parameters to send: drop an image made by Kiri or AUTOMATIC1111 first")
        # the saved styles the prompts hold go back into the Styles dropdown, out of the text (as A1111 reads it)
        values["prompt"], values["negative_prompt"], styles = restore(engine, values["prompt"],
                                                                      values.get("negative_prompt") or "")
        gen = txt2img.settings
        updates = {
            txt2img.prompt: values.get("prompt", gr.update()),
            txt2img.negative_prompt: values.get("negative_prompt", ""),
            gen.steps: values.get("steps", gr.update()),
            gen.cfg_scale: values.get("cfg_scale", gr.update()),
            gen.seed: values.get("seed", gr.update()),
            gen.width: values.get("width", gr.update()),
            gen.height: values.get("height", gr.update()),
            gen.clip_skip: values.get("clip_skip", 1),
            tabs: gr.Tabs(selected=txt2img_tab_id),
        }
        if txt2img.styles is not None:
            updates[txt2img.styles] = styles
        if gen.vae is not None:  # the VAE it was made with, when this server has it; else the setting's
            named = parsed.params.get("VAE")
            entry = engine.catalog.find_of_kind("vae", named) if named else None
            updates[gen.vae] = entry.name if entry is not None else ""
        sampler = values.get("sampler_name")
        if sampler:
            try:
                found, schedule = engine.samplers.resolve(str(sampler), values.get("scheduler"))
                updates[gen.sampler] = gr.update(value=found.name)
                updates[gen.schedule] = gr.update(value=schedule)
            except KiriError:
                gr.Warning(f"Sampler {sampler!r} is not available in Kiri; keeping the current one.")
        if txt2img.detailer is not None:  # the ADetailer units it was detailed with, into the Detailer panel
            updates.update(txt2img.detailer.updates_from_infotext(parsed.params))
        if txt2img.hires is not None:  # the hires fix as it was made (turned off for a picture without one)
            hires, notes = hires_from_infotext(txt2img.hires, parsed.params)
            updates.update(hires)
            for note in notes:
                gr.Warning(note)
        return updates

    gen = txt2img.settings
    targets = [txt2img.prompt, txt2img.negative_prompt, gen.steps, gen.cfg_scale, gen.seed, gen.width, gen.height,
               gen.sampler, gen.schedule, gen.clip_skip, tabs, *([gen.vae] if gen.vae is not None else []),
               *([txt2img.styles] if txt2img.styles is not None else []),
               *(txt2img.detailer.inputs().values() if txt2img.detailer is not None else []),
               *(txt2img.hires.values() if txt2img.hires is not None else [])]
    send.click(send_to_txt2img, raw, targets, api_visibility="private", queue=False)
    return send_to_txt2img, targets
