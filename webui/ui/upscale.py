"""The Super-resolution tab: upload (one picture or a batch), upscaler 1 and 2, scale or target
size, tiles, and a before/after slider. The work is the engine's upscale_images, as a job."""

from __future__ import annotations

import time

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.jobs import Job
from webui.engine.generation.img2img import MAX_SD_UPSCALE, SEAM_FIXES, Img2ImgRequest, SDUpscale
from webui.engine.generation.requests import MAX_SIZE, MAX_STEPS, MIN_SIZE
from webui.engine.upscale import MAX_OVERLAP, MAX_SCALE, MAX_TILE, UpscaleRequest, all_upscalers, upscale_images

from .common import JOB_EVENT, model_choices, owner_of, selected_title, user_errors

TAB_ID = "upscale"


def upscaler_choices(engine: Engine) -> list[tuple[str, str]]:
    """(label with kind and scale, name) for the dropdowns."""
    return [(u.label, u.name) for u in all_upscalers(engine.catalog)]


def render(engine: Engine, send=None) -> dict:
    """Builds the tab; returns the image input other tabs' "Send to Super-resolution" buttons fill."""
    choices = upscaler_choices(engine)
    models = [name for label, name in choices if "(model" in label]
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Tabs():
                with gr.Tab("Single image", id="sr-single"):
                    image = gr.Image(label="Image", type="pil", image_mode=None, sources=["upload", "clipboard"],
                                     height=300, elem_id="sr-image")
                with gr.Tab("Batch", id="sr-batch"):
                    files = gr.File(label="Pictures (or a .zip of pictures)", file_count="multiple", elem_id="sr-files")
            with gr.Row():
                upscaler_1 = gr.Dropdown(choices, value=models[0] if models else "Lanczos", label="Upscaler",
                                         elem_id="sr-upscaler-1")
                refresh = gr.Button("↻", size="sm", min_width=40, scale=0, elem_id="sr-upscaler-refresh")
            with gr.Tabs():
                with gr.Tab("Scale by", id="sr-by"):
                    scale = gr.Slider(1, MAX_SCALE, value=2, step=0.05, label="Scale", elem_id="sr-scale")
                with gr.Tab("Scale to", id="sr-to") as to_tab:
                    with gr.Row():
                        to_width = gr.Number(512, label="Width", precision=0)
                        to_height = gr.Number(512, label="Height", precision=0)
                    crop = gr.Checkbox(True, label="Crop to fit")
            by_size = gr.State(False)
            with gr.Row():
                upscaler_2 = gr.Dropdown(choices, value="None", label="Upscaler 2")
                visibility = gr.Slider(0, 1, value=0, step=0.01, label="Upscaler 2 visibility")
            with gr.Accordion("Tiles", open=False):
                with gr.Row():
                    tile = gr.Slider(0, MAX_TILE, value=0, step=32, label="Tile size (0: from free memory)")
                    overlap = gr.Slider(0, MAX_OVERLAP, value=32, step=8, label="Tile overlap")
            with gr.Accordion("SD upscale: repaint the upscaled picture tile by tile with a checkpoint", open=False,
                              elem_id="sr-sd"):
                with gr.Row():
                    sd_model = gr.Dropdown(model_choices(engine), value=selected_title(engine), label="Checkpoint",
                                           elem_id="sr-sd-model")
                    sd_denoise = gr.Slider(0, 1, value=0.3, step=0.01, label="Denoising strength", elem_id="sr-sd-denoise")
                sd_prompt = gr.Textbox("", label="Prompt (what the tiles show)", lines=2, elem_id="sr-sd-prompt")
                sd_negative = gr.Textbox("", label="Negative prompt", lines=1)
                with gr.Row():
                    sd_tile = gr.Slider(MIN_SIZE, MAX_SIZE, value=_native_size(engine), step=8, label="Tile size",
                                        elem_id="sr-sd-tile")
                    sd_overlap = gr.Slider(0, MAX_SIZE // 2, value=_native_size(engine) // 8, step=8, label="Tile overlap")
                    sd_steps = gr.Slider(1, MAX_STEPS, value=20, step=1, label="Steps")
                    sd_seed = gr.Number(-1, label="Seed (-1: random)", precision=0)
                with gr.Row():
                    sd_seam = gr.Radio(list(SEAM_FIXES), value="Half tile offset", label="Seam fix", elem_id="sr-sd-seam")
                    sd_seam_denoise = gr.Slider(0, 1, value=0.25, step=0.01, label="Seam fix denoising strength")
                    sd_seed_per_tile = gr.Checkbox(False, label="A seed per tile")
                sd_button = gr.Button("SD upscale", variant="primary", elem_id="sr-sd-run")
        with gr.Column(scale=4, elem_classes=["kiri-output"]):
            with gr.Row(elem_classes=["kiri-actions"]):
                run_button = gr.Button("Upscale", variant="primary", elem_id="sr-run", scale=3, elem_classes=["kiri-generate"])
                interrupt = gr.Button("Interrupt", variant="stop", scale=1, elem_id="sr-interrupt", elem_classes=["kiri-interrupt"])
            slider = gr.ImageSlider(label="Before / after", type="pil", elem_id="sr-slider", max_height=480)
            gallery = gr.Gallery(label="Results", columns=4, height=240, object_fit="contain", format="png", elem_id="sr-gallery",
                                 interactive=False)
            menu = send.menu("sr", gallery) if send is not None else None
            infotext = gr.Textbox(label="Parameters", lines=2, interactive=False, elem_id="sr-infotext")
            if menu is not None:
                menu.infotext = infotext
            status = gr.Markdown(elem_id="sr-status")

    to_tab.select(lambda: True, None, by_size, api_visibility="private", queue=False)

    def run(image, files, upscaler_1, upscaler_2, visibility, scale, by_size, to_width, to_height, crop, tile, overlap,
            request: gr.Request, progress: gr.Progress = gr.Progress()):
        """Upscale the picture (or each picture of the batch); returns before/after, the results, the parameters."""
        started = time.perf_counter()
        job = Job(kind="extras", owner=owner_of(request))
        job.listeners.append(lambda j: progress((j.step, j.steps), desc=j.describe(), unit="tiles") if j.steps else None)
        with user_errors():
            pictures, names = _pictures(image, files, engine.settings.max_pixels)
            req = UpscaleRequest(
                images=pictures, upscaler_1=upscaler_1 or "None", upscaler_2=upscaler_2 or "None",
                upscaler_2_visibility=float(visibility or 0), scale=float(scale or 1),
                width=int(to_width) if by_size and to_width else None, height=int(to_height) if by_size and to_height else None,
                crop=bool(crop), tile_size=int(tile or 0), tile_overlap=int(overlap or 0), names=names,
            )
            result = upscale_images(engine, req, job)
        for warning in result.warnings:
            gr.Warning(warning)
        shown = [str(p) for p in result.paths] if result.paths else result.images
        before_after = (pictures[0], result.images[0]) if result.images else None
        note = f"{len(result.images)} image(s) in {time.perf_counter() - started:.1f} s"
        note += f", {result.tiles} tile(s)." if result.tiles else "."
        if result.interrupted:
            note += " **Interrupted**: finished tiles are kept."
        if result.paths:
            note += f" Saved to `{result.paths[0].parent}`."
        return before_after, shown, (result.infotexts[0] if result.infotexts else ""), note

    inputs = [image, files, upscaler_1, upscaler_2, visibility, scale, by_size, to_width, to_height, crop, tile, overlap]
    run_button.click(run, inputs, [slider, gallery, infotext, status], api_name="upscale", **JOB_EVENT)

    def sd_run(image, upscaler_1, scale, sd_model, sd_prompt, sd_negative, sd_denoise, sd_tile, sd_overlap, sd_steps, sd_seed,
               sd_seam, sd_seam_denoise, sd_seed_per_tile, request: gr.Request, progress: gr.Progress = gr.Progress()):
        """SD upscale: upscale with the upscaler above, then image to image over tiles with the checkpoint."""
        started = time.perf_counter()
        job = Job(kind="img2img", owner=owner_of(request))
        job.listeners.append(lambda j: progress((j.step, j.steps), desc=j.describe(), unit="steps") if j.steps else None)
        with user_errors():
            if image is None:
                from webui.engine.core.errors import InvalidRequest

                raise InvalidRequest("image", "no image to upscale: upload a picture in Single image")
            tile = int(sd_tile)
            req = Img2ImgRequest(
                prompt=sd_prompt or "", negative_prompt=sd_negative or "", init_image=image, width=tile, height=tile,
                steps=int(sd_steps), seed=int(sd_seed if sd_seed is not None else -1), model=sd_model or None,
                denoising_strength=float(sd_denoise),
                sd_upscale=SDUpscale(upscaler=upscaler_1 or "Lanczos", scale=min(float(scale or 2), MAX_SD_UPSCALE),
                                     overlap=int(sd_overlap), seam_fix=sd_seam or "None",
                                     seam_fix_denoise=float(sd_seam_denoise), seed_per_tile=bool(sd_seed_per_tile)),
            )
            result = engine.img2img(req, job)
        for warning in result.warnings:
            gr.Warning(warning)
        shown = [str(p) for p in result.paths] if result.paths else result.images
        note = f"{len(result.images)} image(s) in {time.perf_counter() - started:.1f} s."
        if result.interrupted:
            note += " **Interrupted**: finished tiles are kept."
        if result.paths:
            note += f" Saved to `{result.paths[0].parent}`."
        before_after = (image, result.images[0]) if result.images else None
        return before_after, shown, (result.infotexts[0] if result.infotexts else ""), note

    sd_inputs = [image, upscaler_1, scale, sd_model, sd_prompt, sd_negative, sd_denoise, sd_tile, sd_overlap, sd_steps,
                 sd_seed, sd_seam, sd_seam_denoise, sd_seed_per_tile]
    sd_button.click(sd_run, sd_inputs, [slider, gallery, infotext, status], api_name="sd_upscale", **JOB_EVENT)

    def stop(request: gr.Request) -> str:
        return "Interrupting after the current tile…" if engine.interrupt(owner_of(request)) else "Nothing is running."

    interrupt.click(stop, None, status, api_visibility="private", queue=False)

    def rescan():
        engine.catalog.scan()
        fresh = upscaler_choices(engine)
        return gr.update(choices=fresh), gr.update(choices=fresh)

    refresh.click(rescan, None, [upscaler_1, upscaler_2], api_visibility="private", queue=False)
    if send is not None:  # the picture, and its prompt and seed for SD upscale
        send.target("Super-resolution", image, TAB_ID, dict(prompt=sd_prompt, negative_prompt=sd_negative, seed=sd_seed,
                                                            steps=sd_steps), [])
    return {"image": image}


def _native_size(engine: Engine) -> int:
    """The tile size SD upscale starts with: the checkpoint's own size (64 for Kiri's default models)."""
    try:
        return int(getattr(engine.current_entry(), "native_size", None) or 512)
    except Exception:  # noqa: BLE001 - no checkpoint yet: A1111's 512
        return 512


def _pictures(image, files, max_pixels: int) -> tuple[list, list[str]]:
    """The batch's pictures (a .zip is opened), else the single image. Each is opened lazily and
    checked against the pixel budget on its header (core/limits.py); the engine decodes it."""
    import zipfile
    from pathlib import Path

    from webui.engine.core.errors import InvalidRequest
    from webui.engine.core.limits import open_image

    pictures, names = [], []
    for item in files or []:
        path = Path(getattr(item, "name", None) or str(item))
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.is_dir() or Path(info.filename).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
                        continue
                    pictures.append(open_image(archive.read(info), f"image ({info.filename})", limit=max_pixels))
                    names.append(Path(info.filename).name)
            continue
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InvalidRequest("image", f"{path.name} is not a picture Kiri can read: {exc}") from exc
        pictures.append(open_image(raw, f"image ({path.name})", limit=max_pixels))
        names.append(path.name)
    if not pictures and image is not None:
        pictures, names = [image], ["image.png"]
    if not pictures:
        raise InvalidRequest("image", "no image to upscale: upload a picture (or pictures in the Batch tab)")
    return pictures, names
