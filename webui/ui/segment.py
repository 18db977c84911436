"""The Segmentation tab: masks from words, clicks or a box; combine and touch them up; send one to Inpaint.

Clicks on the picture come in the upload's own pixels (ui/pixels.py: the picture is drawn to fill its box). What
the clicks mean is chosen above the picture: a point inside (+), a point outside (-), or the two
corners of a box. Each click segments again (flood fill is instant; a SAM takes a moment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.engine.context import Engine
from webui.engine.core.errors import InvalidRequest
from webui.engine.segment import SegmentRequest, mask_tools, save_result, segment, segmenters

from .common import JOB_EVENT, owner_of, user_errors
from .pixels import click_box, clicked

AUTOMATIC = "Automatic (best for the prompt)"
CLICK_MODES = ("Point inside (+)", "Point outside (-)", "Box corners")
TOOL_CHOICES = ("grow", "shrink", "feather", "fill holes", "keep largest", "invert")


@dataclass
class Prompts:
    """The clicks of one user (kept in gr.State): points [x, y, 1|0] and box corners."""

    points: list
    corners: list

    def box(self) -> list | None:
        if len(self.corners) < 2:
            return None
        (xa, ya), (xb, yb) = self.corners[-2:]
        return [min(xa, xb), min(ya, yb), max(xa, xb) + 1, max(ya, yb) + 1]

    def describe(self) -> str:
        parts = []
        if self.points:
            parts.append("Points: " + ", ".join(f"({x}, {y}){'+' if label else '-'}" for x, y, label in self.points))
        if self.box():
            parts.append(f"Box: {self.box()}")
        elif self.corners:
            parts.append(f"Box corner {self.corners[0]}: click the opposite corner")
        return "; ".join(parts) or "No clicks yet: click the picture, or type what to find."


def model_choices(engine: Engine) -> list[str]:
    return [AUTOMATIC] + [f"{s.name}" for s in segmenters(engine) if s.problem is None]


def _caption(index: int, label: str, score: float) -> str:
    return f"{index + 1}: {label} ({score:.2f})"


def _mark(preview, prompts: Prompts):
    """The clicks drawn on the preview: green points inside, red outside, the box in yellow."""
    from PIL import ImageDraw

    preview = preview.copy()
    draw = ImageDraw.Draw(preview)
    r = max(2, round(min(preview.size) / 80))
    for x, y, label in prompts.points:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(40, 220, 60) if label else (240, 40, 40), outline=(0, 0, 0))
    box = prompts.box()
    if box:
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=(255, 220, 0))
    return preview


def run_segment(engine: Engine, image, prompts: Prompts, prompt: str, model: str, threshold: float, owner: str):
    """Segment and save; returns (result, mask arrays). Errors are the engine's InvalidRequest."""
    if image is None:
        raise InvalidRequest("image", "upload a picture first")
    request = SegmentRequest(image, prompt or None, list(prompts.points) or None, prompts.box(),
                             None if model in (None, "", AUTOMATIC) else model, float(threshold))
    result = segment(engine, request, owner)
    if engine.settings.save_images and result.masks:
        save_result(result, request.image, engine.outputs_for(owner))
    return result, result.arrays()


def render(engine: Engine, inpaint: Any = None, tabs: gr.Tabs | None = None, send_to: Any = None) -> None:
    with gr.Row():
        with gr.Column(scale=4):
            click_mode = gr.Radio(list(CLICK_MODES), value=CLICK_MODES[0], label="A click on the picture adds",
                                  elem_id="segment-click-mode")
            image = gr.Image(label="Picture: click an object", type="pil", image_mode=None, sources=["upload", "clipboard"],
                             height=400, elem_id="segment-image")
            image_xy = click_box(image)
            clicks_text = gr.Markdown(Prompts([], []).describe(), elem_id="segment-clicks")
            clear = gr.Button("Clear clicks", size="sm")
            prompt = gr.Textbox(label="What to find (words; commas separate things)", placeholder="the red circle, the star",
                                elem_id="segment-prompt")
            with gr.Row():
                model = gr.Dropdown(model_choices(engine), value=AUTOMATIC, label="Segmenter", elem_id="segment-model")
                refresh = gr.Button("↻", size="sm", min_width=40, scale=0, elem_id="segment-model-refresh")
                threshold = gr.Slider(0, 1, value=0.5, step=0.01, label="Threshold (higher keeps less)",
                                      elem_id="segment-threshold")
            run = gr.Button("Segment", variant="primary", elem_id="segment-run", elem_classes=["kiri-generate"])
        with gr.Column(scale=4):
            preview = gr.Image(label="Masks over the picture", type="pil", interactive=False, height=400,
                               elem_id="segment-preview")
            gallery = gr.Gallery(label="Masks", columns=4, height=180, object_fit="contain", format="png",
                                 elem_id="segment-gallery", interactive=False)
            picks = gr.CheckboxGroup([], label="Pick masks", elem_id="segment-picks")
            with gr.Row():
                operation = gr.Radio(list(mask_tools.OPERATIONS), value="union", label="Combine picked masks by")
                combine = gr.Button("Combine", size="sm", elem_id="segment-combine")
            with gr.Row():
                tool = gr.Dropdown(list(TOOL_CHOICES), value="grow", label="Mask tool")
                radius = gr.Slider(0, 64, value=4, step=1, label="Radius (px)")
                apply_tool = gr.Button("Apply", size="sm", elem_id="segment-apply-tool")
            mask_out = gr.Image(label="Mask (white = inside; ⬇ downloads the PNG)", type="pil", image_mode="L", format="png",
                                interactive=False, height=240, elem_id="segment-mask")
            send = gr.Button("Send mask to Inpaint", variant="primary", elem_id="segment-send-inpaint")
            status = gr.Markdown(elem_id="segment-status")
            if send_to is not None:  # the picture itself, on to another tab
                send_to.menu("segment", image, exclude=("Segmentation",))

    prompts_state = gr.State(Prompts([], []))
    masks_state = gr.State([])  # bool arrays of the last result
    mask_state = gr.State(None)  # the mask being worked on (bool, or uint8 once feathered)

    def segment_now(image, prompts, prompt_text, model_name, threshold_value, request: gr.Request):
        with user_errors():
            result, arrays = run_segment(engine, image, prompts, prompt_text, model_name, threshold_value, owner_of(request))
        choices = [_caption(i, label, score) for i, (label, score) in enumerate(zip(result.labels, result.scores))]
        shown = _mark(mask_tools.overlay(image, arrays), prompts)
        first = arrays[0] if arrays else None
        note = (f"{len(arrays)} mask(s) from **{result.info['model']}** in {result.info['seconds']:.2f} s."
                if arrays else f"**{result.info['model']}** found nothing: try a lower threshold or other words.")
        return (shown, [(mask_tools.to_image(a), c) for a, c in zip(arrays, choices)],
                gr.CheckboxGroup(choices=choices, value=choices[:1]), arrays, first,
                mask_tools.to_image(first) if first is not None else None, note)

    outputs = [preview, gallery, picks, masks_state, mask_state, mask_out, status]
    inputs = [image, prompts_state, prompt, model, threshold]
    run.click(segment_now, inputs, outputs, api_name="segment", **JOB_EVENT)

    def on_click(mode, prompts: Prompts, xy: str):
        point = clicked(xy)  # the picture's own pixels, however large it is drawn
        if point is None:
            return prompts, prompts.describe()
        x, y = point
        if mode == CLICK_MODES[2]:
            corners = (prompts.corners + [[x, y]])[-2:]
            prompts = Prompts(prompts.points, corners)
        else:
            prompts = Prompts(prompts.points + [[x, y, int(mode == CLICK_MODES[0])]], prompts.corners)
        return prompts, prompts.describe()

    def segment_after_click(image, prompts, prompt_text, model_name, threshold_value, request: gr.Request):
        if len(prompts.corners) == 1 and not prompts.points:
            return [gr.update()] * 6 + ["Now click the opposite corner of the box."]
        return segment_now(image, prompts, prompt_text, model_name, threshold_value, request)

    image_xy.change(on_click, [click_mode, prompts_state, image_xy], [prompts_state, clicks_text], api_visibility="private",
                    queue=False).then(segment_after_click, inputs, outputs, api_visibility="private", **JOB_EVENT)

    def reset():
        fresh = Prompts([], [])
        return fresh, fresh.describe(), None, [], gr.CheckboxGroup(choices=[], value=[]), [], None, None, ""

    clear.click(reset, None, [prompts_state, clicks_text, preview, gallery, picks, masks_state, mask_state, mask_out, status],
                api_visibility="private", queue=False)
    # Any new picture, uploaded or sent in from another tab, starts with no clicks and no masks.
    image.change(reset, None, [prompts_state, clicks_text, preview, gallery, picks, masks_state, mask_state, mask_out, status],
                 api_visibility="private", queue=False)
    refresh.click(lambda: gr.Dropdown(choices=model_choices(engine)), None, model, api_visibility="private", queue=False)

    def combine_picked(image, arrays, picked, op):
        chosen = [arrays[int(p.split(":")[0]) - 1] for p in picked or [] if int(p.split(":")[0]) - 1 < len(arrays)]
        with user_errors():
            combined = mask_tools.combine(chosen, op)
        return combined, mask_tools.to_image(combined), mask_tools.overlay(image, [combined]) if image is not None else None

    combine.click(combine_picked, [image, masks_state, picks, operation], [mask_state, mask_out, preview],
                  api_visibility="private", queue=False)

    def tool_on(image, mask, tool_name, r):
        if mask is None:
            raise gr.Error("Segment first, or pick and combine masks.")
        hard = mask if mask.dtype == bool else mask > 127  # a feathered mask is made hard again first
        with user_errors():
            changed = mask_tools.apply_tool(hard, tool_name, int(r))
        return changed, mask_tools.to_image(changed), mask_tools.overlay(image, [changed]) if image is not None else None

    apply_tool.click(tool_on, [image, mask_state, tool, radius], [mask_state, mask_out, preview],
                     api_visibility="private", queue=False)

    if send_to is not None:  # a picture sent here starts with no clicks
        fresh = Prompts([], [])
        send_to.target("Segmentation", image, "segment", {}, [(prompts_state, fresh), (clicks_text, fresh.describe())])

    if inpaint is not None and tabs is not None:
        def to_inpaint(image, mask):
            if image is None or mask is None:
                raise gr.Error("Segment a picture first: there is no mask to send.")
            picture = image.convert("RGB")
            return ({"background": picture, "layers": [], "composite": picture}, mask_tools.to_image(mask),
                    gr.Tabs(selected=inpaint.tab_id), gr.Tabs(selected="inpaint"), "inpaint")

        send.click(to_inpaint, [image, mask_state], [inpaint.editor, inpaint.mask_upload, tabs, inpaint.modes, inpaint.mode],
                   api_visibility="private", queue=False)
