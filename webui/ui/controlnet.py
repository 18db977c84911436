"""The ControlNet / IP-Adapter panel of Text to image and Image to image: N units (the
`control_net_unit_count` setting), each an image to upload or a canvas to draw on, a preprocessor, a
model of the loaded checkpoint's family, weight, start and end, control and resize mode, and a preview
of the preprocessed map. The engine add-ons (webui/engine/controlnet, webui/engine/ip_adapter) do the
work; this module only maps widgets onto their unit dicts (sd-webui-controlnet's keys)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import gradio as gr

from webui.engine import controlnet as cn
from webui.engine import ip_adapter
from webui.engine.context import Engine
from webui.engine.controlnet.preprocess import Preprocessors, builtin_preprocessors
from webui.engine.controlnet.units import model_name
from webui.engine.core.errors import InvalidRequest, KiriError
from webui.engine.core.limits import base64_bytes, decode_image

from .common import as_image, user_errors
from .send_to import editor_value
from .theme import REFRESH

CONTROL_MODES, RESIZE_MODES = cn.CONTROL_MODES, cn.RESIZE_MODES
DEFAULT_MODULE = "none"
CANVAS_MODULE = "invert"  # a drawing is black on white; ControlNets want white lines on black
# The unit's values, by the names a handler receives (prefixed: cn0_image) and sd-webui-controlnet's keys.
FIELDS = ("enabled", "image", "use_init", "module", "model", "weight", "guidance_start", "guidance_end",
          "control_mode", "resize_mode", "pixel_perfect", "processor_res", "threshold_a", "threshold_b")
EMPTY_EDITOR = {"background": None, "layers": [], "composite": None}
SLIDERS = ("processor_res", "threshold_a", "threshold_b")
CANVAS_INFO = ("Upload a picture or draw: \"New canvas\" gives a white page of the tab's size and a black brush "
               "(the preprocessor turns to \"invert\", since ControlNets want white lines on black).")


@dataclass
class Unit:
    index: int
    components: dict[str, gr.components.Component]


@dataclass
class ControlPanel:
    prefix: str
    units: list[Unit] = field(default_factory=list)

    def inputs(self) -> dict[str, gr.components.Component]:
        """Handler keyword -> component, e.g. cn0_image; give them to `inputs_kwargs`."""
        return {f"cn{u.index}_{name}": c for u in self.units for name, c in u.components.items()}

    def pop_addons(self, settings: dict) -> dict[str, list[dict]]:
        """Pops the panel's values out of a handler's **settings: {"controlnet": [...], "ip_adapter": [...]}
        of the enabled units (sd-webui-controlnet's unit dicts), only the kinds that have one."""
        found: dict[str, list[dict]] = {cn.NAME: [], ip_adapter.NAME: []}
        for unit in self.units:
            values = {name: settings.pop(f"cn{unit.index}_{name}", None) for name in FIELDS}
            if not values["enabled"]:
                continue
            module = values["module"] or DEFAULT_MODULE
            # a slider the module does not have is hidden: -1 (its default) rather than the value it last showed
            res, a, b = (_number(values[name], -1) if spec is not None else -1
                         for name, spec in zip(SLIDERS, slider_specs(module)))
            found[ip_adapter.NAME if is_ip_adapter(module) else cn.NAME].append(dict(
                enabled=True, image=None if values["use_init"] else unit_image(values["image"]), mask=None,
                module=module, model=values["model"] or "None", weight=_number(values["weight"], 1.0),
                guidance_start=_number(values["guidance_start"], 0.0), guidance_end=_number(values["guidance_end"], 1.0),
                control_mode=values["control_mode"] or CONTROL_MODES[0], resize_mode=values["resize_mode"] or RESIZE_MODES[1],
                processor_res=int(res), threshold_a=a, threshold_b=b, pixel_perfect=bool(values["pixel_perfect"]),
            ))
        return {name: units for name, units in found.items() if units}

    def updates_from_args(self, engine: Engine, args: list[dict] | None) -> dict:
        """Component -> value that set the panel to sd-webui-controlnet's unit dicts (`args`, the Library's
        Reproduce body's alwayson_scripts.controlnet.args, pictures as base64): each unit as it was, the
        panel's other units off. A unit with no picture of its own reads the init image where the tab has one."""
        updates: dict = {}
        args = list(args or [])
        for unit in self.units:
            c = unit.components
            arg = args[unit.index] if unit.index < len(args) and isinstance(args[unit.index], dict) else {}
            updates[c["enabled"]] = bool(arg.get("enabled", bool(arg)))
            if not updates[c["enabled"]]:
                continue
            module = arg.get("module") or DEFAULT_MODULE
            image = arg.get("image")
            image = image[0] if isinstance(image, list) and image else image
            where = f"controlnet[{unit.index}].image"
            picture = decode_image(base64_bytes(image, where), where).convert("RGB") if image else None
            updates[c["image"]] = editor_value(picture) if picture is not None else EMPTY_EDITOR
            if "use_init" in c:
                updates[c["use_init"]] = picture is None
            updates[c["module"]] = gr.update(value=module, info=module_label(module))
            updates[c["model"]] = _model_update(engine, module, None, model_name(arg.get("model") or ""))
            updates[c["weight"]] = _number(arg.get("weight"), 1.0)
            updates[c["guidance_start"]] = _number(arg.get("guidance_start"), 0.0)
            updates[c["guidance_end"]] = _number(arg.get("guidance_end"), 1.0)
            updates[c["control_mode"]] = _named(arg.get("control_mode"), CONTROL_MODES, 0)
            updates[c["resize_mode"]] = _named(arg.get("resize_mode"), RESIZE_MODES, 1)
            updates[c["pixel_perfect"]] = bool(arg.get("pixel_perfect", False))
            for name, spec in zip(SLIDERS, slider_specs(module)):
                value = arg.get(name)
                updates[c[name]] = gr.update(visible=False) if spec is None else gr.update(
                    visible=True, label=spec.name, minimum=spec.min, maximum=spec.max, step=spec.step,
                    value=spec.value if value is None or value == -1 else value)
        return updates

    def components(self) -> list:
        """Every component updates_from_args sets (the outputs of a handler that returns its updates)."""
        return [c for unit in self.units for c in unit.components.values()]


def _named(value: Any, names: tuple[str, ...], default: int) -> str:
    """A mode as its name, from a name or sd-webui-controlnet's index."""
    if isinstance(value, str) and value in names:
        return value
    try:
        return names[int(value)]
    except (TypeError, ValueError, IndexError):
        return names[default]


def is_ip_adapter(module: str | None) -> bool:
    return ip_adapter.is_ip_adapter_module(module)


def unit_image(value: Any):
    """The unit's picture from its editor: the upload or blank canvas with the strokes on it, as RGB
    (strokes on an empty editor are drawn on white); None when there is nothing."""
    from PIL import Image

    if not isinstance(value, dict):
        return as_image(value)
    background = value.get("background")
    layers = [layer for layer in value.get("layers") or [] if layer is not None]
    if background is None and not any(layer.convert("RGBA").getchannel("A").getbbox() for layer in layers):
        return None
    composite = value.get("composite")
    if composite is None:
        return as_image(background)
    if isinstance(composite, str):
        composite = Image.open(composite)
    rgba = composite.convert("RGBA")
    page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(page, rgba).convert("RGB")


def blank_canvas(width: Any, height: Any) -> dict:
    """The editor's value for "New canvas": a white page of the tab's size, no strokes yet."""
    from PIL import Image

    page = Image.new("RGB", (int(width or 512), int(height or 512)), "white")
    return {"background": page, "layers": [], "composite": page}


def canvas_brush(side: int | None = None) -> gr.Brush:
    """Black (and white, to correct) at a radius of about 1/100 of the canvas: lines as thin as the edge
    maps ControlNets learn from, still a few pixels on a small canvas."""
    size = max(1, round((side or 512) / 100)) if side else "auto"
    return gr.Brush(default_size=size, colors=["#000000", "#ffffff"], default_color="#000000", color_mode="fixed")


def for_display(array: Any, side: int = 256) -> Any:
    """A small map blown up by whole pixels (a 64 px map would show as a stamp in the panel)."""
    import numpy as np

    factor = side // max(array.shape[:2]) if max(array.shape[:2]) else 1
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1) if factor > 1 else array


def _number(value: Any, default: float) -> float:
    return float(value) if value is not None and value != "" else default


def _family(engine: Engine, title: str | None) -> str | None:
    if title:
        entry = engine.catalog.find(title)
        return entry.family if entry is not None else None
    try:
        return engine.current_entry().family
    except KiriError:
        return None


def model_choices(engine: Engine, module: str | None, family: str | None) -> list[tuple[str, str]]:
    """The unit's models for its module's kind (ControlNet or IP-Adapter), of the checkpoint's family."""
    listing = ip_adapter.list_models(engine.catalog, family) if is_ip_adapter(module) else cn.list_models(engine.catalog, family)
    return [(m["title"], m["name"]) for m in listing]


@lru_cache(maxsize=1)
def _preprocessors() -> Preprocessors:
    """The built-in preprocessors, for their labels and sliders (the engine runs them)."""
    return Preprocessors(builtin_preprocessors())


def module_choices() -> list[str]:
    names = cn.module_names()
    return names + [m for m in ip_adapter.MODULES if m not in names]


def module_label(module: str | None) -> str:
    if is_ip_adapter(module):
        return "IP-Adapter: the look of a reference picture"
    try:
        return _preprocessors().get(module).label
    except KiriError:
        return ""


def slider_specs(module: str | None) -> list[Any]:
    """The module's resolution, threshold A and B sliders (None for each it does not have)."""
    try:
        found = _preprocessors().get(module)
    except KiriError:  # an IP-Adapter module: no preprocessor sliders
        return [None, None, None]
    return [getattr(found, name, None) for name in ("resolution", "threshold_a", "threshold_b")]


def slider_updates(module: str | None) -> list[dict]:
    """Preprocessor resolution and Threshold A/B as the module names them; hidden when it has none."""
    return [gr.update(visible=False) if spec is None else
            gr.update(visible=True, label=spec.name, minimum=spec.min, maximum=spec.max, step=spec.step, value=spec.value)
            for spec in slider_specs(module)]


def render(engine: Engine, prefix: str, model_picker: gr.Dropdown, size: tuple | None = None,
           init_image: gr.components.Component | None = None) -> ControlPanel:
    """The accordion with the units; `size`: the tab's (width, height) sliders (the canvas's size and
    pixel perfect's target); `init_image`: img2img's picture, which a unit with none of its own uses."""
    panel = ControlPanel(prefix)
    family = _family(engine, None)
    modules = module_choices()
    with gr.Accordion("ControlNet / IP-Adapter", open=False, elem_id=f"{prefix}-controlnet"):
        with gr.Tabs():
            for index in range(cn.unit_count(engine.settings)):
                with gr.Tab(f"Unit {index}", id=f"{prefix}-cn{index}"):
                    panel.units.append(_render_unit(engine, prefix, index, modules, family, model_picker, size, init_image))
    return panel


def _render_unit(engine: Engine, prefix: str, index: int, modules: list[str], family: str | None,
                 model_picker: gr.Dropdown, size: tuple | None, init_image) -> Unit:
    eid = f"{prefix}-cn{index}"
    c: dict[str, Any] = {}
    c["enabled"] = gr.Checkbox(False, label="Enable", elem_id=f"{eid}-enabled")
    with gr.Row(equal_height=True):
        # an empty value rather than None: API clients may leave the unit's inputs out (they take these defaults)
        c["image"] = gr.ImageEditor(EMPTY_EDITOR, label="Control image", type="pil", image_mode="RGBA", height=300,
                                    sources=["upload", "clipboard"], layers=False, format="png", transforms=(),
                                    brush=canvas_brush(),
                                    eraser=gr.Eraser(), elem_id=f"{eid}-image")
        preview = gr.Image(label="Preprocessed map", type="numpy", interactive=False, height=300, format="png",
                           elem_id=f"{eid}-preview")
    with gr.Row():
        new_canvas = gr.Button("New canvas", size="sm", elem_id=f"{eid}-new-canvas")
        show = gr.Button("Preview", size="sm", elem_id=f"{eid}-preview-button")
    gr.Markdown(CANVAS_INFO, elem_classes=["kiri-hint"])
    if init_image is not None:
        c["use_init"] = gr.Checkbox(False, label="Use the init image",
                                    info="also what a unit without a picture of its own uses", elem_id=f"{eid}-use-init")
    with gr.Row():
        c["module"] = gr.Dropdown(modules, value=DEFAULT_MODULE, label="Preprocessor", info=module_label(DEFAULT_MODULE),
                                  elem_id=f"{eid}-module", scale=3)
        models = model_choices(engine, DEFAULT_MODULE, family)
        c["model"] = gr.Dropdown(models, value=models[0][1] if models else "", label="Model", info=_models_info(models),
                                 elem_id=f"{eid}-model", allow_custom_value=True, scale=3)
        refresh = gr.Button(REFRESH, size="sm", min_width=40, scale=0, elem_id=f"{eid}-model-refresh",
                            elem_classes=["kiri-cn-refresh"])
    c["weight"] = gr.Slider(0, 2, value=1, step=0.05, label="Control weight", elem_id=f"{eid}-weight")
    with gr.Row():
        c["guidance_start"] = gr.Slider(0, 1, value=0, step=0.01, label="Starting control step", elem_id=f"{eid}-start")
        c["guidance_end"] = gr.Slider(0, 1, value=1, step=0.01, label="Ending control step", elem_id=f"{eid}-end")
    c["control_mode"] = gr.Radio(list(CONTROL_MODES), value=CONTROL_MODES[0], label="Control mode", elem_id=f"{eid}-control-mode")
    c["resize_mode"] = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[1], label="Resize mode", elem_id=f"{eid}-resize-mode")
    c["pixel_perfect"] = gr.Checkbox(False, label="Pixel perfect",
                                     info="the preprocessor works at the generated picture's size (its shorter side)", elem_id=f"{eid}-pixel-perfect")
    c["processor_res"] = gr.Slider(64, 2048, value=512, step=8, label="Preprocessor resolution", visible=False,
                                   elem_id=f"{eid}-processor-res")
    with gr.Row():
        c["threshold_a"] = gr.Slider(0, 255, value=100, step=1, label="Threshold A", visible=False, elem_id=f"{eid}-threshold-a")
        c["threshold_b"] = gr.Slider(0, 255, value=200, step=1, label="Threshold B", visible=False, elem_id=f"{eid}-threshold-b")
    sliders = [c[name] for name in SLIDERS]

    def on_module(module, title, model):
        return (gr.update(info=module_label(module)), _model_update(engine, module, title, model), *slider_updates(module))

    # .input, the user's own choice: a panel filled by Reproduce sets the model and sliders with the module
    c["module"].input(on_module, [c["module"], model_picker, c["model"]], [c["module"], c["model"], *sliders],
                      api_visibility="private", queue=False)
    model_picker.change(lambda module, title, model: _model_update(engine, module, title, model),
                        [c["module"], model_picker, c["model"]], c["model"], api_visibility="private", queue=False)
    refresh.click(lambda module, title, model: _model_update(engine, module, title, model, rescan=True),
                  [c["module"], model_picker, c["model"]], c["model"], api_visibility="private", queue=False)

    width, height = size if size is not None else (gr.State(512), gr.State(512))

    def on_new_canvas(w, h, title, model):
        value = blank_canvas(w, h)
        _, model_update, *sliders_update = on_module(CANVAS_MODULE, title, model)
        return (gr.ImageEditor(value=value, brush=canvas_brush(max(value["background"].size))), True,
                gr.update(value=CANVAS_MODULE, info=module_label(CANVAS_MODULE)), model_update, *sliders_update)

    new_canvas.click(on_new_canvas, [width, height, model_picker, c["model"]],
                     [c["image"], c["enabled"], c["module"], c["model"], *sliders], api_visibility="private", queue=False)

    def run_preview(image, use_init, init, module, res, a, b, pixel_perfect, w, h):
        picture = None if use_init else unit_image(image)
        if picture is None and init is not None:
            picture = unit_image(init)
        with user_errors():
            if picture is None:
                raise InvalidRequest("image", "upload a picture or draw on a new canvas first")
            # pixel perfect: the resolution the engine then uses, the generation's shorter side
            resolution = min(int(w), int(h)) if pixel_perfect and w and h else int(res)
            # an IP-Adapter looks at the reference picture itself: that is its "map"
            shown = cn.preview("none" if is_ip_adapter(module) else module, picture, resolution, a, b,
                               catalog=engine.catalog)
        return for_display(shown)

    use_init = c.get("use_init") or gr.State(False)
    init = init_image if init_image is not None else gr.State(None)
    show.click(run_preview, [c["image"], use_init, init, c["module"], *sliders, c["pixel_perfect"], width, height], preview,
               api_visibility="private")
    return Unit(index, c)


def _model_update(engine: Engine, module: str | None, title: str | None, current: str | None,
                  rescan: bool = False) -> dict:
    """The unit's model list for its module and the checkpoint's family; the chosen model kept if it is still there."""
    if rescan:
        engine.catalog.scan()
    choices = model_choices(engine, module, _family(engine, title))
    names = [name for _, name in choices]
    return gr.update(choices=choices, value=current if current in names else (names[0] if names else ""),
                     info=_models_info(choices, module))


def _models_info(choices: list, module: str | None = None) -> str:
    """Where to put models when none fits the checkpoint."""
    if choices:
        return "of the checkpoint's family"
    folder = "models/ipadapter" if is_ip_adapter(module) else "models/ControlNet"
    return f"none for this checkpoint: add one to {folder}, then {REFRESH}"

