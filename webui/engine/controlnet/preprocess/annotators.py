"""Preprocessors that run annotator weights (transformers): depth, normals from depth, pose.

Their weights come through ``services``: a callable ``services(kind) -> folder or None`` for the
kinds "depth" (a Depth Anything or DPT/MiDaS folder), "pose" (a VitPose folder) and "detector"
(optional: an RT-DETR or other transformers object detector whose labels include "person"). A
folder is what ``save_pretrained`` writes (config.json, safetensors weights and, where the model
has one, preprocessor_config.json). ``services.device`` (optional attribute, default "cpu") says where
the models run. Loaded models are kept (one per kind) until `clear_cache()`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

from ._cv import cv2
import numpy as np

from webui.engine.core.errors import InvalidRequest

from .image import processing_size, resize_to
from .openpose import coco_to_openpose, draw_bodypose
from .registry import Preprocessor, Slider

RESOLUTION = Slider("Resolution", 512, 64, 2048, 8)
PERSON_THRESHOLD = 0.5  # detector score for a person box
KEYPOINT_THRESHOLD = 0.3  # VitPose score under which a keypoint is not drawn

_lock = threading.Lock()
_cache: dict[str, tuple[str, Any, Any]] = {}  # kind -> (folder, model, processor)


def clear_cache() -> None:
    """Forget the loaded annotator models (the caller frees memory after)."""
    with _lock:
        _cache.clear()


def _folder(services: Callable[[str], Any] | None, kind: str, module: str) -> Path:
    folder = services(kind) if services is not None else None
    if folder is None:
        raise InvalidRequest("module", f"{module} needs a {kind} model in models/annotators/{kind}; none is installed")
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise InvalidRequest("module", f"{module}: {folder} is not a model folder (no config.json)")
    return folder


def model_type(folder: Path) -> str:
    return str(json.loads((folder / "config.json").read_text()).get("model_type", ""))


def _device(services: Any) -> str:
    return str(getattr(services, "device", None) or "cpu")


def _load(kind: str, folder: Path, model_class: Any, default_processor: Callable[[], Any], device: str):
    with _lock:
        cached = _cache.get(kind)
        if cached is not None and cached[0] == str(folder):
            return cached[1], cached[2]
    from transformers import AutoImageProcessor

    model = model_class.from_pretrained(str(folder), use_safetensors=True).to(device).eval()
    if (folder / "preprocessor_config.json").is_file():
        processor = AutoImageProcessor.from_pretrained(str(folder))
    else:
        processor = default_processor()
    with _lock:
        _cache[kind] = (str(folder), model, processor)
    return model, processor


def _depth_processor(kind: str) -> Callable[[], Any]:
    def make():
        from transformers import DPTImageProcessor

        if kind == "depth_anything":
            return DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True,
                                     ensure_multiple_of=14, resample=3, do_pad=False)
        return DPTImageProcessor(size={"height": 384, "width": 384}, keep_aspect_ratio=False)
    return make


def estimate_depth(image: np.ndarray, services: Any, module: str, expect: str | None = None) -> np.ndarray:
    """Relative depth at the image's size, float32 0..1, near = 1 (the models predict inverse depth)."""
    import torch
    from transformers import AutoModelForDepthEstimation

    folder = _folder(services, "depth", module)
    found = model_type(folder)
    if expect is not None and found != expect:
        raise InvalidRequest("module", f"{module} needs a {expect} model in models/annotators/depth; "
                                       f"the one there is {found or 'of unknown type'}")
    if found not in ("depth_anything", "dpt"):
        raise InvalidRequest("module", f"{module}: models/annotators/depth holds a {found or 'unknown'} model; "
                                       "Depth Anything or DPT (MiDaS) expected")
    device = _device(services)
    model, processor = _load("depth", folder, AutoModelForDepthEstimation, _depth_processor(found), device)
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        depth = model(pixel_values=inputs["pixel_values"].to(device)).predicted_depth
    depth = torch.nn.functional.interpolate(depth[:, None].float(), size=image.shape[:2], mode="bicubic",
                                            align_corners=False)[0, 0].cpu().numpy()
    depth -= depth.min()
    top = float(depth.max())
    return (depth / top if top > 0 else depth).astype(np.float32)


def _grey(depth01: np.ndarray) -> np.ndarray:
    return np.repeat((depth01 * 255.0).round().clip(0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def depth_anything(image, resolution, a=None, b=None, *, services=None, **_):
    return _grey(estimate_depth(image, services, "depth_anything", expect="depth_anything"))


def depth_dpt(image, resolution, a=None, b=None, *, services=None, **_):
    return _grey(estimate_depth(image, services, "depth_dpt", expect="dpt"))


def normals_from_depth(depth01: np.ndarray, background: float = 0.4) -> np.ndarray:
    """A normal map in the convention of ControlNet 1.1's normalbae model (ScanNet protocol as we read it).

    The depth map is a height field (near = high, its range half the picture's short side). Colour =
    (n + 1) / 2 with red = facing left, green = facing up, blue = facing the viewer, so a flat
    surface facing the camera is (128, 128, 255). Pixels with depth under `background` face the viewer.
    """
    h, w = depth01.shape
    height = depth01.astype(np.float32) * 0.5 * min(h, w)
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    flat = depth01 < background
    gx[flat] = 0
    gy[flat] = 0
    # Height field z = h(x, y) (x right, y down in the picture, z toward the viewer): n ~ (-gx, -gy, 1).
    # Red is "facing left" (+gx), green is "facing up" (+gy, since y runs down), blue is toward the viewer.
    normal = np.stack([gx, gy, np.ones_like(gx)], axis=2)
    normal /= np.linalg.norm(normal, axis=2, keepdims=True)
    return ((normal + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)


def normal_from_depth(image, resolution, a, b=None, *, services=None, **_):
    return normals_from_depth(estimate_depth(image, services, "normal_from_depth"), float(a))


def _person_boxes(image: np.ndarray, services: Any, device: str) -> list[list[float]]:
    """Person boxes (x, y, w, h) from the detector in models/annotators/detector, or the whole picture without one."""
    h, w = image.shape[:2]
    folder = services("detector") if services is not None else None
    if folder is None:
        return [[0.0, 0.0, float(w), float(h)]]
    import torch
    from transformers import AutoModelForObjectDetection

    folder = _folder(services, "detector", "openpose")
    model, processor = _load("detector", folder, AutoModelForObjectDetection, lambda: None, device)
    if processor is None:
        raise InvalidRequest("module", f"openpose: the detector in {folder} has no preprocessor_config.json")
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"].to(device))
    found = processor.post_process_object_detection(outputs, target_sizes=[(h, w)], threshold=PERSON_THRESHOLD)[0]
    names = {int(k): str(v).lower() for k, v in model.config.id2label.items()}
    boxes = []
    for label, box in zip(found["labels"].tolist(), found["boxes"].tolist()):
        if names.get(int(label)) == "person":
            x0, y0, x1, y1 = (max(0.0, v) for v in box)
            if x1 > x0 and y1 > y0:
                boxes.append([x0, y0, x1 - x0, y1 - y0])
    return boxes


def detect_people(image: np.ndarray, services: Any) -> list[np.ndarray]:
    """Each person's (18, 2) OpenPose keypoints in the image's pixels, NaN where not seen."""
    import torch
    from transformers import VitPoseForPoseEstimation

    folder = _folder(services, "pose", "openpose")
    if model_type(folder) != "vitpose":
        raise InvalidRequest("module", f"openpose needs a VitPose model in models/annotators/pose; "
                                       f"the one there is {model_type(folder) or 'of unknown type'}")
    device = _device(services)
    boxes = _person_boxes(image, services, device)
    if not boxes:
        return []

    def default_processor():
        from transformers import VitPoseImageProcessor

        return VitPoseImageProcessor()

    model, processor = _load("pose", folder, VitPoseForPoseEstimation, default_processor, device)
    if model.config.num_labels != 17:
        raise InvalidRequest("module", f"openpose needs a VitPose model of COCO's 17 keypoints; the one in "
                                       f"models/annotators/pose has {model.config.num_labels}")
    inputs = processor(images=image, boxes=[boxes], return_tensors="pt")
    extra = {}
    if getattr(model.config.backbone_config, "num_experts", 1) > 1:  # ViTPose+: pick the COCO expert
        extra["dataset_index"] = torch.zeros(len(boxes), dtype=torch.long, device=device)
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"].to(device), **extra)
    results = processor.post_process_pose_estimation(outputs, boxes=[boxes])[0]
    return [coco_to_openpose(r["keypoints"].cpu().numpy(), r["scores"].cpu().numpy(), KEYPOINT_THRESHOLD)
            for r in results]


def openpose(image, resolution, a=None, b=None, *, services=None, **_):
    """People's poses as OpenPose stick figures on black, drawn at the processing resolution."""
    people = detect_people(image, services)
    h_raw, w_raw = image.shape[:2]
    h, w = processing_size((h_raw, w_raw), resolution)
    scale = np.array([w / w_raw, h / h_raw], np.float32)
    canvas = draw_bodypose(np.zeros((h, w, 3), np.uint8), [p * scale for p in people])
    return resize_to(canvas, (h_raw, w_raw), kind="smooth")


def annotator_preprocessors() -> list[Preprocessor]:
    return [
        Preprocessor("depth_anything", depth_anything, needs="depth",
                     label="Depth (Depth Anything): near is bright, far is dark"),
        Preprocessor("depth_dpt", depth_dpt, needs="depth", aliases=("depth_midas", "depth"),
                     label="Depth (DPT / MiDaS): near is bright, far is dark"),
        Preprocessor("normal_from_depth", normal_from_depth, needs="depth",
                     label="Normal map from depth: which way each surface faces",
                     threshold_a=Slider("Background Threshold", 0.4, 0.0, 1.0, 0.01)),
        Preprocessor("openpose", openpose, needs="pose", aliases=("dw_openpose_full",),
                     label="Pose (OpenPose skeleton): people's body positions as stick figures",
                     resolution=RESOLUTION),
    ]
