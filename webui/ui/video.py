"""The Video frames tab: Text to video, Video to video and Interpolate, one clip player for all three."""

from __future__ import annotations

import time
from typing import Any, Callable

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.jobs import Job
from webui.engine.generation import requests as limits
from webui.engine.video import service
from webui.engine.video.service import InterpolateRequest, Txt2VideoRequest, Vid2VidRequest

from .common import JOB_EVENT, QUIET_PROGRESS, owner_of, progress_line, stream_job, user_errors
from .pixels import click_box, clicked as pixel_of

_V2V = {name: f.default for name, f in Vid2VidRequest.__dataclass_fields__.items()}  # the engine's defaults

TRAVEL_HELP = ("One prompt for the whole clip, or **prompt travel**: one line per keyframe, `frame: prompt`, e.g. "
               "`0: a red circle` and `8: a blue circle`; the frames in between blend the two.")


def _run(engine: Engine, kind: str, call: Callable[[Job], Any], request: gr.Request, progress: gr.Progress):
    """Run a video job: the progress strip under the clip while it runs (no overlay over the player,
    which keeps showing the last clip), then the clip, its files, its infotext and a note."""
    job = Job(kind=kind, owner=owner_of(request))
    started = time.perf_counter()
    with user_errors():
        def moving(*_preview):  # a new preview or step: only the strip moves
            return gr.skip(), gr.skip(), gr.skip(), progress_line(job)

        result = yield from stream_job(lambda: call(job), job, progress, moving, moving)
    for warning in result.warnings:
        gr.Warning(warning)
    note = f"{len(result.frame_paths)} frame(s) at {result.fps:g} fps in {time.perf_counter() - started:.1f} s."
    if result.resumed_frames:
        note += f" {result.resumed_frames} frame(s) were already on disk from an earlier run and were reused."
    if result.interrupted:
        again = f" with seed {result.seed}" if result.seed is not None else ""
        if result.folder is not None and result.folder.name == "interrupted":
            note += (f" **Interrupted**: every frame as it stood at that step is kept; run the same settings{again} "
                     "to make the whole clip.")
        else:
            note += f" **Interrupted**: the finished frames are kept; run the same settings{again} to resume."
    if result.folder is not None:
        note += f" Saved to `{result.folder}`."
    files = [str(p) for p in (result.gif_path, result.webp_path, result.zip_path) if p is not None]
    yield (str(result.path) if result.path else None), files, result.info, note


def render(engine: Engine, send=None) -> None:
    models = service.video_models(engine)
    modules = service.motion_modules(engine)
    samplers = engine.samplers.names("epsilon")
    side = _native_size(engine, models[0] if models else None)
    with gr.Row():
        model = gr.Dropdown(models, value=models[0] if models else None, label="Model (video model, or an image "
                            "checkpoint animated by a motion module)", allow_custom_value=True, elem_id="video-model", scale=4)
        motion = gr.Dropdown(modules, value=modules[0] if modules else None, label="Motion module (models/motion/)",
                             allow_custom_value=True, elem_id="video-motion", scale=3)
        refresh = gr.Button("Refresh", scale=0, min_width=80)
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Tabs() as video_tabs:
                with gr.Tab("Text to video", id="txt2video"):
                    # Generate first, level with the clip on the right: not below a long column of settings
                    with gr.Row(elem_classes=["kiri-actions"]):
                        t2v_go = gr.Button("Generate", variant="primary", elem_id="txt2video-generate", scale=3, elem_classes=["kiri-generate"])
                        t2v_stop = gr.Button("Interrupt", variant="stop", scale=1, elem_id="txt2video-interrupt", elem_classes=["kiri-interrupt"])
                    prompt = gr.Textbox(label="Prompt", lines=3, elem_id="txt2video-prompt",
                                        placeholder="a large red circle moving right, blue background")
                    gr.Markdown(TRAVEL_HELP)
                    t2v_examples = gr.Dataset(components=[prompt], samples=[[e] for e in _motion_examples(
                        engine, modules[0] if modules else None)] or [[""]], label="Example prompts for this motion module",
                        elem_id="txt2video-examples")
                    negative = gr.Textbox(label="Negative prompt", lines=1)
                    with gr.Row():
                        frames = gr.Slider(1, 256, value=_motion_frames(engine, modules[0] if modules else None), step=1,
                                           label="Frames", elem_id="txt2video-frames")
                        fps = gr.Slider(1, service.MAX_FPS, value=8, step=1, label="FPS", elem_id="txt2video-fps")
                    with gr.Row():
                        width = gr.Slider(limits.MIN_SIZE, 1024, value=side, step=8, label="Width", elem_id="txt2video-width")
                        height = gr.Slider(limits.MIN_SIZE, 1024, value=side, step=8, label="Height", elem_id="txt2video-height")
                    with gr.Accordion("First frame (image-to-video models)", open=False):
                        first = gr.Image(label="The clip starts from this picture (LTX-Video, Wan or CogVideoX "
                                               "image-to-video models)", type="pil", sources=["upload", "clipboard"],
                                         elem_id="txt2video-first-frame")
                    t2v = _generation_widgets("txt2video", samplers)
                    free_init = gr.Slider(0, service.MAX_FREE_INIT, value=0, step=1, label="FreeInit iterations",
                                          info="motion modules: make the clip this many times, each from the last "
                                               "one's low frequencies; objects change less between frames, each "
                                               "iteration costs a full run (0: off)", elem_id="txt2video-free-init")
                with gr.Tab("Video to video", id="vid2vid"):
                    with gr.Row(elem_classes=["kiri-actions"]):
                        v2v_go = gr.Button("Generate", variant="primary", elem_id="vid2vid-generate", scale=3, elem_classes=["kiri-generate"])
                        v2v_stop = gr.Button("Interrupt", variant="stop", scale=1, elem_id="vid2vid-interrupt", elem_classes=["kiri-interrupt"])
                    v_source = gr.Video(label="Source clip (MP4, WebM, MOV, GIF)", sources=["upload"], elem_id="vid2vid-source")
                    v_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="vid2vid-prompt")
                    v_negative = gr.Textbox(label="Negative prompt", lines=1)
                    # The engine's defaults (Vid2VidRequest), so the tab and the API restyle alike.
                    strength = gr.Slider(0, 1, value=_V2V["denoising_strength"], step=0.01, label="Denoising strength")
                    with gr.Row():
                        consistency = gr.Radio(list(service.CONSISTENCY), value=_V2V["consistency"], label="Consistency between frames",
                                               info="blend: the previous output mixed into the next frame; flow: it, "
                                                    "moved along the optical flow first")
                        carry = gr.Slider(0, 1, value=_V2V["consistency_strength"], step=0.05, label="Consistency strength")
                    structure = gr.Dropdown(["auto", "off", *[e.name for e in engine.catalog.of_kind("controlnet")]],
                                            value=_V2V["structure"], label="Keep the source's shapes (ControlNet on each frame)",
                                            info="auto: the checkpoint's own structure ControlNet, if it names one "
                                                 "(frame by frame; not with the motion module)", elem_id="vid2vid-structure")
                    with gr.Row():
                        every_nth = gr.Number(1, precision=0, label="Every Nth frame", minimum=1)
                        start = gr.Number(0, label="Start (s)", minimum=0)
                        end = gr.Number(None, label="End (s; empty or 0: to the end)", minimum=0)
                    with gr.Row():
                        max_frames = gr.Number(120, precision=0, label="Max frames", minimum=1, maximum=service.MAX_FRAMES)
                        max_size = gr.Slider(limits.MIN_SIZE, 1024, value=512, step=8, label="Max size (longer side)")
                    mask_prompt = gr.Textbox(label="Mask prompt: repaint only this (needs a segmenter that reads words in models/segmentation/)", lines=1, elem_id="vid2vid-mask-prompt")
                    with gr.Accordion("Repaint one object: click it on the first frame (needs a SAM 2 video model "
                                      "in models/segmentation/)", open=False):
                        first_frame = gr.Image(label="First frame: click the object to follow", type="pil",
                                               interactive=False, elem_id="vid2vid-first-frame")
                        first_xy = click_box(first_frame)
                        with gr.Row():
                            clicks = gr.Textbox(label="Clicks (x, y, 1 = object / 0 = not)", interactive=False,
                                                elem_id="vid2vid-clicks", scale=4)
                            click_kind = gr.Radio([1, 0], value=1, label="Next click", scale=1)
                            clear_clicks = gr.Button("Clear clicks", scale=1, min_width=80)
                    use_motion = gr.Checkbox(False, label="Restyle through the motion module (AnimateDiff video to video: "
                                             "windows of frames denoised together; SD 1.x/2.x models)",
                                             elem_id="vid2vid-use-motion")
                    v2v = _generation_widgets("vid2vid", samplers)
                with gr.Tab("Interpolate", id="interpolate"):
                    with gr.Row(elem_classes=["kiri-actions"]):
                        i_go = gr.Button("Interpolate", variant="primary", elem_id="interpolate-generate", scale=3, elem_classes=["kiri-generate"])
                        i_stop = gr.Button("Interrupt", variant="stop", scale=1, elem_id="interpolate-interrupt", elem_classes=["kiri-interrupt"])
                    i_source = gr.Video(label="Source clip", sources=["upload"], elem_id="interpolate-source")
                    factor = gr.Radio([2, 4], value=2, label="Frame rate x", elem_id="interpolate-factor")
                    gr.Markdown("In-between frames from optical flow (OpenCV); no model is needed.")
        with gr.Column(scale=4, elem_classes=["kiri-output"]):
            clip = gr.Video(label="Clip", interactive=False, autoplay=True, loop=True, elem_id="video-output")
            downloads = gr.File(label="GIF, WebP and the frames as PNGs (zip)", file_count="multiple", interactive=False,
                                elem_id="video-downloads")
            menu = send.menu("video", clip, kind="clip") if send is not None else None
            info = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id="video-infotext")
            if menu is not None:
                menu.infotext = info
            status = gr.Markdown(elem_id="video-status", elem_classes=["kiri-status"])
    outputs = [clip, downloads, info, status]
    if send is not None:
        sampler, steps, cfg, seed = v2v
        send.target("Video to video", v_source, "video", dict(prompt=v_prompt, negative_prompt=v_negative, seed=seed,
                                                             sampler_name=sampler, steps=steps, cfg_scale=cfg),
                    [(video_tabs, "vid2vid")])
        send.target("Interpolate", i_source, "video", {}, [(video_tabs, "interpolate")])

    def text_to_video(prompt, negative, frames, fps, width, height, first, sampler, steps, cfg, seed, model, motion,
                      free_init, request: gr.Request, progress: gr.Progress = gr.Progress()):
        with user_errors():
            req = Txt2VideoRequest(prompt=prompt or "", negative_prompt=negative or "", frames=int(frames), fps=float(fps),
                                   width=int(width), height=int(height), sampler_name=sampler or None, steps=int(steps),
                                   cfg_scale=float(cfg), seed=int(seed if seed is not None else -1), model=model or None,
                                   motion_module=motion or None, image=first, free_init_iterations=int(free_init or 0))
        yield from _run(engine, "txt2video", lambda job: service.txt2video(engine, req, job), request, progress)

    def video_to_video(source, prompt, negative, strength, consistency, carry, every_nth, start, end, max_frames,
                       max_size, mask_prompt, clicked, use_motion, sampler, steps, cfg, seed, model, motion, structure,
                       request: gr.Request, progress: gr.Progress = gr.Progress()):
        with user_errors():
            req = Vid2VidRequest(video=_path(source), prompt=prompt or "", negative_prompt=negative or "",
                                 denoising_strength=float(strength), consistency=consistency, consistency_strength=float(carry),
                                 every_nth=int(every_nth or 1), start_time=float(start or 0),
                                 end_time=float(end) if end not in (None, "") and float(end) > 0 else None, max_frames=int(max_frames or 1),
                                 max_size=int(max_size), mask_prompt=mask_prompt or None, sampler_name=sampler or None,
                                 steps=int(steps), cfg_scale=float(cfg), seed=int(seed if seed is not None else -1),
                                 model=_image_model(engine, model), motion_module=(motion or None) if use_motion else None,
                                 mask_points=_parse_clicks(clicked), structure=structure or "auto")
        yield from _run(engine, "vid2vid", lambda job: service.vid2vid(engine, req, job), request, progress)

    def interpolate(source, factor, request: gr.Request, progress: gr.Progress = gr.Progress()):
        with user_errors():
            req = InterpolateRequest(video=_path(source), factor=int(factor))
        yield from _run(engine, "interpolate", lambda job: service.interpolate(engine, req, job), request, progress)

    t2v_go.click(text_to_video, [prompt, negative, frames, fps, width, height, first, *t2v, model, motion, free_init], outputs,
                 api_name="txt2video", **JOB_EVENT, **QUIET_PROGRESS)
    v2v_go.click(video_to_video, [v_source, v_prompt, v_negative, strength, consistency, carry, every_nth, start, end,
                                  max_frames, max_size, mask_prompt, clicks, use_motion, *v2v, model, motion, structure], outputs,
                 api_name="vid2vid", **JOB_EVENT, **QUIET_PROGRESS)
    i_go.click(interpolate, [i_source, factor], outputs, api_name="interpolate", **JOB_EVENT, **QUIET_PROGRESS)

    def show_first_frame(source):
        return _first_frame(engine, _path(source)), ""

    def add_click(clicked: str, kind, xy: str):
        point = pixel_of(xy)  # in the frame's own pixels, however large it is drawn
        if point is None:
            return clicked
        x, y = point
        return "; ".join(filter(None, [clicked, f"{x}, {y}, {int(kind)}"]))

    v_source.change(show_first_frame, v_source, [first_frame, clicks], api_visibility="private", queue=False)
    first_xy.change(add_click, [clicks, click_kind, first_xy], clicks, api_visibility="private", queue=False)
    clear_clicks.click(lambda: "", None, clicks, api_visibility="private", queue=False)

    def stop(request: gr.Request) -> str:
        return "Interrupting after the current step; the finished frames are kept…" if engine.interrupt(owner_of(request)) \
            else "Nothing is running."

    for button in (t2v_stop, v2v_stop, i_stop):
        button.click(stop, None, status, api_visibility="private", queue=False)

    def rescan():
        engine.catalog.scan()
        names, motions = service.video_models(engine), service.motion_modules(engine)
        return (gr.update(choices=names, value=names[0] if names else None),
                gr.update(choices=motions, value=motions[0] if motions else None))

    refresh.click(rescan, None, [model, motion], api_visibility="private")

    def size_for(name: str | None):
        side = _native_size(engine, name)
        return gr.update(value=side), gr.update(value=side)

    model.change(size_for, model, [width, height], api_visibility="private", queue=False)
    motion.change(lambda name: (gr.update(value=_motion_frames(engine, name)),
                                gr.Dataset(samples=[[e] for e in _motion_examples(engine, name)] or [[""]])),
                  motion, [frames, t2v_examples], api_visibility="private", queue=False)
    t2v_examples.click(lambda sample: sample[0], t2v_examples, prompt, api_visibility="private", queue=False)


def _generation_widgets(prefix: str, samplers: list[str]) -> list:
    with gr.Row():
        sampler = gr.Dropdown(samplers, value="Euler", label="Sampler", allow_custom_value=True, elem_id=f"{prefix}-sampler")
        steps = gr.Slider(1, limits.MAX_STEPS, value=20, step=1, label="Sampling steps", elem_id=f"{prefix}-steps")
    with gr.Row():
        cfg = gr.Slider(0, limits.MAX_CFG, value=7.0, step=0.5, label="CFG scale")
        seed = gr.Number(-1, label="Seed (-1 = random)", precision=0, elem_id=f"{prefix}-seed")
    return [sampler, steps, cfg, seed]


def _path(value: Any) -> Any:
    """A gr.Video value: a file path (or a dict holding one)."""
    if isinstance(value, dict):
        value = value.get("video") or value.get("path")
        if isinstance(value, dict):
            value = value.get("path")
    return value


def _first_frame(engine: Engine, path: Any):
    """The clip's first frame at its own size (clicks on it are in source pixels), or None."""
    if not path:
        return None
    from webui.engine.video.service import first_frame

    try:
        return first_frame(engine, path)  # within the pixel budget, checked on the clip's header
    except Exception:  # noqa: BLE001 - an unreadable or oversized upload shows no frame; Generate says why
        return None


def _parse_clicks(text: str | None) -> list | None:
    """"12, 30, 1; 40, 8, 0" -> [[12, 30, 1], [40, 8, 0]] (None when empty)."""
    if not text or not text.strip():
        return None
    clicks = []
    for part in text.split(";"):
        values = [v.strip() for v in part.split(",")]
        if len(values) != 3:
            raise gr.Error(f"a click is x, y, 1 or 0; got {part.strip()!r}")
        clicks.append([float(values[0]), float(values[1]), int(values[2])])
    return clicks


def _motion_examples(engine: Engine, name: str | None) -> list[str]:
    """Prompts the motion module is known to follow (its kiri_examples.json), for the examples row."""
    entry = engine.catalog.find_of_kind("motion", name) if name else None
    return entry.example_prompts() if entry is not None else []


def _motion_frames(engine: Engine, name: str | None) -> int:
    """Frames to offer with a motion module: the clip length it sees at once (its config's
    motion_max_seq_length: 8 for Kiri's embedded module, 32 for AnimateDiff's), at most 16."""
    import json

    entry = engine.catalog.find_of_kind("motion", name) if name else None
    try:
        length = json.loads((entry.path / "config.json").read_text()).get("motion_max_seq_length")
    except (AttributeError, OSError, ValueError):
        length = None
    return min(16, int(length)) if isinstance(length, int) and length > 0 else 16


def _native_size(engine: Engine, name: str | None) -> int:
    """The frame side the model was trained at (64 for Kiri's embedded models), 512 when unknown."""
    entry = (engine.catalog.find(name) or engine.catalog.find_of_kind("video", name)) if name else None
    return int(getattr(entry, "native_size", None) or 512)


def _image_model(engine: Engine, name: str | None) -> str | None:
    """Video to video restyles with an image checkpoint: a native video model there means the selected one."""
    return None if not name or service.is_video_model(engine, name) else name
