"""The Detailer panel (ADetailer's) under Text to image and Image to image: N units (the
`ad_max_models` setting, 2 by default), each what to find (a word or phrase, by the best segmenter
for words or one chosen), how many regions, the mask's grow/shrink and blur, padding, its own
prompts (`[SEP]` splits them per region) and strength. The tab's gallery then shows each detailed
picture followed by the main pass (before/after)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from webui.engine import detailer
from webui.engine.context import Engine
from webui.engine.core.errors import KiriError

AUTOMATIC = "Automatic (best segmenter for words)"
FIELDS = ("enabled", "find", "detector", "prompt", "negative_prompt", "confidence", "k_largest", "dilate_erode",
          "mask_blur", "padding", "denoise", "merge", "use_steps", "steps", "use_size", "size")


@dataclass
class Panel:
    prefix: str
    units: list[dict[str, gr.components.Component]] = field(default_factory=list)
    skip_img2img: gr.Checkbox | None = None

    def inputs(self) -> dict[str, gr.components.Component]:
        """Handler keyword -> component (ad0_find, ad1_prompt, ...); give them to `inputs_kwargs`."""
        found = {f"ad{i}_{name}": c for i, unit in enumerate(self.units) for name, c in unit.items()}
        if self.skip_img2img is not None:
            found["ad_skip_img2img"] = self.skip_img2img
        return found

    def updates_from_infotext(self, params: dict[str, str]) -> dict:
        """{component: value} for a picture's ADetailer keys (PNG info's "Send to Text to image"); the
        units it does not record are turned off."""
        values = fields_from_infotext(params, len(self.units))
        inputs = self.inputs()
        updates: dict = {inputs[f"ad{i}_enabled"]: False for i in range(len(self.units))}
        updates.update({inputs[name]: value for name, value in values.items() if name in inputs})
        return updates

    def pop_addons(self, settings: dict, show_before: bool = True) -> dict[str, Any]:
        """Pops the panel's values out of a handler's **settings: {"adetailer": {...}} when a unit is
        enabled (the request's detailer settings; `show_before`: the main pass follows each detailed
        picture, off for the X/Y grid, whose cells are one picture each), else {}."""
        skip = bool(settings.pop("ad_skip_img2img", False))
        units = []
        for index in range(len(self.units)):
            v = {name: settings.pop(f"ad{index}_{name}", None) for name in FIELDS}
            if not v["enabled"] or not str(v["find"] or "").strip():
                continue
            find = str(v["find"]).strip()
            chosen = v["detector"] and v["detector"] != AUTOMATIC
            size = int(v["size"] or 512)
            units.append(dict(
                ad_model=v["detector"] if chosen else find, ad_model_classes=find if chosen else "",
                ad_prompt=v["prompt"] or "", ad_negative_prompt=v["negative_prompt"] or "",
                ad_confidence=float(v["confidence"] if v["confidence"] is not None else 0.3),
                ad_mask_k_largest=int(v["k_largest"] or 0), ad_dilate_erode=int(v["dilate_erode"] or 0),
                ad_mask_blur=int(v["mask_blur"] or 0), ad_inpaint_only_masked_padding=int(v["padding"] or 0),
                ad_denoising_strength=float(v["denoise"] if v["denoise"] is not None else 0.4),
                ad_mask_merge_invert=v["merge"] or "None", ad_use_steps=bool(v["use_steps"]),
                ad_steps=int(v["steps"] or 20), ad_use_inpaint_width_height=bool(v["use_size"]),
                ad_inpaint_width=size, ad_inpaint_height=size,
            ))
        if not units:
            return {}
        return {detailer.NAME: {"units": units, "skip_img2img": skip, "show_before": show_before}}


def _detectors(engine: Engine) -> list[str]:
    try:
        return [AUTOMATIC] + [name for name in detailer.ad_models(engine) if name != "None" and name not in detailer.YOLO_NAMES]
    except KiriError:
        return [AUTOMATIC]


def render(engine: Engine, prefix: str) -> Panel:
    panel = Panel(prefix)
    count = int(getattr(engine.settings, "ad_max_models", 2) or 2)
    detectors = _detectors(engine)
    with gr.Accordion("Detailer", open=False, elem_id=f"{prefix}-detailer"):
        gr.Markdown("Finds each object you name in the finished picture and redraws it at the model's full size; "
                    "the rest of the picture is kept exactly. The gallery shows the detailed picture, then the first.")
        if prefix == "img2img":
            panel.skip_img2img = gr.Checkbox(False, label="Skip image to image: detail the uploaded picture as it is",
                                             elem_id=f"{prefix}-ad-skip")
        with gr.Tabs():
            for index in range(count):
                with gr.Tab(f"{detailer.suffix(index).strip() or '1st'} unit", id=f"{prefix}-ad{index}"):
                    panel.units.append(_render_unit(prefix, index, detectors))
    return panel


def _render_unit(prefix: str, index: int, detectors: list[str]) -> dict[str, gr.components.Component]:
    eid = f"{prefix}-ad{index}"
    c: dict[str, gr.components.Component] = {}
    c["enabled"] = gr.Checkbox(False, label="Enable", elem_id=f"{eid}-enabled")
    with gr.Row():
        c["find"] = gr.Textbox("face" if index == 0 else "hand", label="Find (a word or phrase)", elem_id=f"{eid}-find",
                               info="face, hand, the star; or ADetailer's face_yolov8n.pt")
        c["detector"] = gr.Dropdown(detectors, value=AUTOMATIC, label="Detector", elem_id=f"{eid}-detector")
    c["prompt"] = gr.Textbox("", label="Prompt (empty: the main prompt; [SEP] splits it per region)", lines=2, elem_id=f"{eid}-prompt")
    c["negative_prompt"] = gr.Textbox("", label="Negative prompt (empty: the main one)", lines=1, elem_id=f"{eid}-negative")
    with gr.Row():
        c["confidence"] = gr.Slider(0, 1, value=0.3, step=0.01, label="Confidence", elem_id=f"{eid}-confidence")
        c["k_largest"] = gr.Slider(0, 10, value=0, step=1, label="Only the k largest regions (0: all)")
    with gr.Row():
        c["dilate_erode"] = gr.Slider(-128, 128, value=4, step=1, label="Grow (+) / shrink (-) the mask, pixels")
        c["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Mask blur")
    with gr.Row():
        c["padding"] = gr.Slider(0, 256, value=32, step=4, label="Padding around each region, pixels")
        c["denoise"] = gr.Slider(0, 1, value=0.4, step=0.01, label="Denoising strength", elem_id=f"{eid}-denoise")
    c["merge"] = gr.Radio(list(detailer.MERGE_MODES), value="None", label="Regions: each apart, merged, or merged and inverted")
    with gr.Row():
        c["use_steps"] = gr.Checkbox(False, label="Own steps")
        c["steps"] = gr.Slider(1, 150, value=20, step=1, label="Steps")
    with gr.Row():
        c["use_size"] = gr.Checkbox(False, label="Own inpaint size (else the model's native size)")
        c["size"] = gr.Slider(64, 2048, value=512, step=8, label="Inpaint size")
    return c


def fields_from_infotext(params: dict[str, str], count: int) -> dict[str, Any]:
    """A picture's ADetailer keys -> the panel's values by handler name (PNG info's "Send to")."""
    values: dict[str, Any] = {}
    for index, unit in enumerate(detailer.units_from_infotext(params)[:count]):
        model, classes = unit.get("ad_model", ""), unit.get("ad_model_classes", "")
        values[f"ad{index}_enabled"] = True
        values[f"ad{index}_find"] = classes or model
        values[f"ad{index}_detector"] = model if classes else AUTOMATIC
        for key, name in (("ad_prompt", "prompt"), ("ad_negative_prompt", "negative_prompt"), ("ad_confidence", "confidence"),
                          ("ad_mask_k_largest", "k_largest"), ("ad_dilate_erode", "dilate_erode"), ("ad_mask_blur", "mask_blur"),
                          ("ad_inpaint_only_masked_padding", "padding"), ("ad_denoising_strength", "denoise"),
                          ("ad_mask_merge_invert", "merge"), ("ad_use_steps", "use_steps"), ("ad_steps", "steps")):
            if key in unit:
                values[f"ad{index}_{name}"] = unit[key]
    return values
