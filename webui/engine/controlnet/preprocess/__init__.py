"""ControlNet preprocessors: the control maps ControlNet models condition on, by sd-webui-controlnet's module names.

    preprocessors = Preprocessors(builtin_preprocessors())
    control = preprocessors.run("canny", image, resolution=512, threshold_a=100, threshold_b=200)
    preprocessors.detail()   # GET /controlnet/module_list?alias_names=... module_detail

`run` takes an HxW, HxWx3 or HxWx4 uint8 picture (alpha composited on white) and returns an HxWx3
uint8 map at the picture's size; the work happens at `resolution` on the short side (edge-padded to
64), as sd-webui-controlnet does. A slider value of None or -1 means the module's default; a value
outside the slider, NaN or not a number raises InvalidRequest naming processor_res / threshold_a /
threshold_b. A module without a slider ignores what is sent for it.

=================  ==========================================================  ===============================
module (aliases)   what it makes                                               sliders (default, range)
=================  ==========================================================  ===============================
none               the picture itself                                          -
invert             white lines on black from black lines on white (a drawn     -
 ("invert (from    canvas, for the scribble / lineart / canny models)
 white bg & black
 line)")
canny              thin white outlines (OpenCV Canny)                          Resolution 512 (64..2048),
                                                                               Low Threshold 100 (1..255),
                                                                               High Threshold 200 (1..255)
scribble_xdog      bold white sketch lines (difference of Gaussians)           Resolution, XDoG Threshold 32
                                                                               (1..64; lower = more lines)
lineart_standard   dark lines of a drawing as white lines on black             Resolution
 ("... (from white (Gaussian difference, no weights)
 bg & black line)")
softedge_sobel     soft grey outlines (blurred Sobel gradient magnitude)       Resolution, Blur Sigma 1.5 (0..16)
tile_resample      the picture shrunk by the rate and scaled back (softer)     Down Sampling Rate 1 (1..8)
blur_gaussian      the picture blurred                                         Resolution, Sigma 9 (0.01..64,
                                                                               in processing pixels)
shuffle            colours and textures scrambled by a smooth random flow;     Seed 0 (0..2^31-1); works at
                   the same seed and size give the same map                    512 like sd-webui-controlnet
inpaint_only,      the picture with the masked pixels black; needs `mask`      -
 inpaint ("inpaint (HxW, 255 = repaint); the ControlNet input is
 _global_          inpaint_condition(map, mask): float 0..1, masked = -1
 harmonious")
segmentation       regions coloured with the ADE20K palette of the seg models; -
 ("seg_from_masks") needs `mask`: an HxW integer label map (0 = unlabelled,
                   k = ADE20K class k-1), a list / NxHxW stack of masks (mask i
                   -> class i: wall, building, sky, ...), or {"person": mask,
                   "sky": mask, ...} to say what each region is
depth_anything     depth, near bright (Depth Anything; needs "depth" weights)  -
depth_dpt ("depth", depth, near bright (DPT / MiDaS; needs "depth" weights)     -
 "depth_midas")
normal_from_depth  normal map from the depth model's depth (normalbae colours:  Background Threshold 0.4 (0..1)
                   red = faces left, green = up, blue = toward the viewer)
openpose           body poses as OpenPose 18-keypoint stick figures on black   Resolution 512 (64..2048)
 ("dw_openpose_    (VitPose; "pose" weights, optional "detector" for people;
 full": body only) without one the whole picture is one person's box)
=================  ==========================================================  ===============================

`needs` names the model kind a module loads through `services(kind) -> folder or None` (see
annotators.py); without it `run` raises InvalidRequest("module", ...). module_detail's "model_free"
keeps sd-webui-controlnet's meaning (needs no ControlNet model) and is False for all of these.
"""

from __future__ import annotations

from .annotators import annotator_preprocessors, clear_cache, estimate_depth, normals_from_depth
from .classic import classic_preprocessors
from .image import as_rgb, at_resolution, processing_size, resize_to
from .openpose import coco_to_openpose, draw_bodypose
from .regions import ADE20K_CLASSES, ADE20K_PALETTE, colour_labels, inpaint_condition, label_map
from .registry import Preprocessor, Preprocessors, Slider

__all__ = [
    "ADE20K_CLASSES", "ADE20K_PALETTE", "Preprocessor", "Preprocessors", "Slider", "as_rgb", "at_resolution",
    "builtin_preprocessors", "clear_cache", "coco_to_openpose", "colour_labels", "draw_bodypose", "estimate_depth",
    "inpaint_condition", "label_map", "normals_from_depth", "processing_size", "resize_to",
]


def builtin_preprocessors() -> list[Preprocessor]:
    """Every built-in module, in the order module_list shows them ("none" first)."""
    from .regions import region_preprocessors

    return [*classic_preprocessors(), *region_preprocessors(), *annotator_preprocessors()]
