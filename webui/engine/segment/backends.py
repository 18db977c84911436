"""Segmenters that have weights: a folder under models/segmentation/ with a transformers config.json.

`detect(folder)` reads config.json (no torch) and says which backend runs it and which prompts it
takes; `load(entry, device, allow_pickle)` is the loader the model manager calls (on the job
store's worker) and returns a backend whose `run(image, request)` gives (mask, label, score)
triples, masks as bool arrays of the image's size.

Backends: CLIPSeg (text), SAM and SAM 2 (clicks, a box), SAM 3 (text concepts, a box),
Grounding DINO (text -> boxes, each cut out by a SAM of the catalog when one is there),
semantic segmentation (SegFormer, UperNet, ... : one mask per class present) and universal
segmentation (Mask2Former, MaskFormer, OneFormer: one mask per panoptic segment).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from webui.engine.core.errors import InvalidRequest, ModelLoadError

if TYPE_CHECKING:
    from PIL import Image

    from webui.engine.core.devices import DeviceChoice
    from webui.engine.models.catalog import CatalogEntry

Found = tuple[np.ndarray, str, float]  # (bool mask of the image's size, label, score)

# model_type in config.json -> (kind, prompts it takes)
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "clipseg": ("clipseg", ("text",)),
    "sam": ("sam", ("points", "box")),
    "sam_hq": ("sam", ("points", "box")),
    "sam2": ("sam2", ("points", "box")),
    "sam2_video": ("sam2", ("points", "box")),
    "sam3": ("sam3", ("text", "box")),
    "sam3_video": ("sam3", ("text", "box")),
    "grounding-dino": ("grounding-dino", ("text",)),
    "mm-grounding-dino": ("grounding-dino", ("text",)),
    "mask2former": ("universal", ("none",)),
    "maskformer": ("universal", ("none",)),
    "oneformer": ("universal", ("none",)),
}
SEMANTIC_TYPES = {"segformer", "upernet", "beit", "data2vec-vision", "dpt", "mobilevit", "mobilevitv2", "mobilenet_v2"}


@dataclass(frozen=True)
class Detected:
    kind: str | None  # None: not a segmenter
    prompts: tuple[str, ...] = ()
    problem: str | None = None  # why it cannot be used


def detect(path: Path) -> Detected:
    """Which backend runs the folder at `path`, from its config.json; never imports torch."""
    if not path.is_dir():
        return Detected(None, problem=f"{path.name} is a single weights file: Kiri loads segmenters from a "
                                      "transformers folder (config.json, weights, processor files)")
    if (path / "model_index.json").exists() and not (path / "config.json").exists():
        return Detected(None, problem=f"{path.name} is a diffusers pipeline, not a segmenter: it belongs in models/checkpoints")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        return Detected(None, problem=f"{path.name}/config.json cannot be read ({exc})")
    if not isinstance(config, dict):
        return Detected(None, problem=f"{path.name}/config.json is not a transformers config")
    model_type = str(config.get("model_type", ""))
    architectures = [str(a) for a in config.get("architectures") or []]
    if model_type in KINDS:
        kind, prompts = KINDS[model_type]
        return Detected(kind, prompts)
    if model_type in SEMANTIC_TYPES or any(a.endswith("ForSemanticSegmentation") for a in architectures):
        return Detected("semantic", ("none",))
    what = architectures[0] if architectures else (model_type or "unknown")
    return Detected(None, problem=f"{path.name} holds a {what} model, which is not a segmenter Kiri knows "
                                  f"(CLIPSeg, SAM, SAM 2, SAM 3, Grounding DINO, SegFormer/UperNet, Mask2Former/OneFormer)")


def load(entry: "CatalogEntry", device: "DeviceChoice", allow_pickle: bool) -> "Backend":
    """The manager's loader for the segmenter kind."""
    found = detect(entry.path)
    if found.kind is None:
        raise ModelLoadError(f"cannot load {entry.name}: {found.problem}")
    try:
        backend = BACKENDS[found.kind](entry.path, device.device)
    except ImportError as exc:
        # A model whose own code needs a package Kiri does not require (e.g. torchvision).
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load {entry.name}: {first} (pip install torchvision)") from exc
    backend.name = entry.name
    return backend


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def split_phrases(prompt: str) -> list[str]:
    """"cat, red ball; sky" -> three things to find."""
    return [p.strip() for p in re.split(r"[,;\n]", prompt) if p.strip()]


class Backend:
    kind = ""
    prompts: tuple[str, ...] = ()

    def __init__(self, path: Path, device: str):
        self.path, self.device, self.name = path, device, path.name

    def to(self, device: str) -> "Backend":
        self.model.to(device)
        self.device = device
        return self

    def run(self, image: "Image.Image", request: Any, helper: Callable[[str], "Backend | None"] | None = None) -> list[Found]:
        raise NotImplementedError


class ClipSeg(Backend):
    kind, prompts = "clipseg", ("text",)

    def __init__(self, path: Path, device: str):
        super().__init__(path, device)
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        self.processor = CLIPSegProcessor.from_pretrained(str(path), local_files_only=True)
        self.model = CLIPSegForImageSegmentation.from_pretrained(str(path), local_files_only=True).to(device).eval()

    def probabilities(self, image: "Image.Image", phrases: list[str]):
        """(len(phrases), H, W) probabilities at the image's size."""
        import torch

        max_length = self.model.config.text_config.max_position_embeddings
        inputs = self.processor(text=phrases, images=[image] * len(phrases), padding=True, truncation=True,
                                max_length=max_length, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits
        logits = logits.reshape(len(phrases), 1, *logits.shape[-2:]).float()
        logits = torch.nn.functional.interpolate(logits, size=(image.height, image.width), mode="bilinear", align_corners=False)
        return torch.sigmoid(logits[:, 0]).cpu().numpy()

    def run(self, image, request, helper=None) -> list[Found]:
        phrases = split_phrases(request.prompt)
        found = []
        for phrase, probs in zip(phrases, self.probabilities(image, phrases)):
            mask = probs >= request.threshold
            if mask.any():
                found.append((mask, phrase, float(probs[mask].mean())))
        return found


def _points_and_labels(request) -> tuple[list | None, list | None]:
    if not request.points:
        return None, None
    return [[[[float(x), float(y)] for x, y, _ in request.points]]], [[[int(label) for _, _, label in request.points]]]


class Sam(Backend):
    """SAM: one prompt (all the clicks, and the box) -> three candidate masks with predicted IoU."""

    kind, prompts = "sam", ("points", "box")
    model_class, processor_class = "SamModel", "SamProcessor"

    def __init__(self, path: Path, device: str):
        super().__init__(path, device)
        import transformers

        self.processor = getattr(transformers, self.processor_class).from_pretrained(str(path), local_files_only=True)
        self.model = getattr(transformers, self.model_class).from_pretrained(str(path), local_files_only=True).to(device).eval()

    def _inputs(self, image, points, labels, boxes):
        kwargs: dict[str, Any] = {"images": image, "return_tensors": "pt"}
        if points is not None:
            kwargs.update(input_points=points, input_labels=labels)
        if boxes is not None:
            kwargs["input_boxes"] = boxes
        return self.processor(**kwargs)

    def _post(self, pred_masks, inputs, threshold):
        extra = {"reshaped_input_sizes": inputs["reshaped_input_sizes"].cpu()} if "reshaped_input_sizes" in inputs else {}
        return self.processor.post_process_masks(pred_masks.cpu(), inputs["original_sizes"].cpu(),
                                                 mask_threshold=_logit(threshold), binarize=True, **extra)[0]

    def predict(self, image, points, labels, boxes, threshold, multimask: bool):
        """(prompts, candidates, H, W) bool masks and (prompts, candidates) scores."""
        import torch

        inputs = self._inputs(image, points, labels, boxes)
        model_inputs = {k: v.to(self.device) for k, v in inputs.items()
                        if k in ("pixel_values", "input_points", "input_labels", "input_boxes")}
        with torch.inference_mode():
            out = self.model(**model_inputs, multimask_output=multimask)
        masks = self._post(out.pred_masks, inputs, threshold).numpy().astype(bool)
        return masks, out.iou_scores[0].float().cpu().numpy()

    def run(self, image, request, helper=None) -> list[Found]:
        points, labels = _points_and_labels(request)
        boxes = [[[float(v) for v in request.box]]] if request.box else None
        masks, scores = self.predict(image, points, labels, boxes, request.threshold, multimask=True)
        order = np.argsort(-scores[0])
        return [(masks[0, i], f"candidate {rank + 1}", float(scores[0, i])) for rank, i in enumerate(order) if masks[0, i].any()]


class Sam2(Sam):
    """SAM 2 (Sam2Model). Its image processor needs torchvision, which Kiri does not require, so the
    picture is prepared here from the folder's preprocessor_config.json as that processor does:
    resized to the model's square input (no padding), rescaled to 0..1 and normalised; clicks and
    boxes scaled to that square; the low-resolution masks scaled back up to the picture."""

    kind = "sam2"
    IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, path: Path, device: str):
        Backend.__init__(self, path, device)
        import transformers

        # A sam2_video folder (facebook/sam2.1-*) is SAM 2 with memory: it also tracks through a clip.
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        self.video = model_type == "sam2_video"
        model_class = transformers.Sam2VideoModel if self.video else transformers.Sam2Model
        self.model = model_class.from_pretrained(str(path), local_files_only=True).to(device).eval()
        config = _preprocessor_config(path)
        size = config.get("size") or {}
        backbone = self.model.config.vision_config.backbone_config
        self.side = int(size.get("height") or size.get("longest_edge") or list(backbone.image_size)[0])
        self.mean = np.array(config.get("image_mean", self.IMAGENET_MEAN), np.float32)
        self.std = np.array(config.get("image_std", self.IMAGENET_STD), np.float32)

    TRACK_WINDOW = 32  # frames held at once while tracking; the next window starts from the last mask

    def track(self, frames, points, labels, box=None, keep_going=lambda: True):
        """Masks of the object clicked (points, labels: [[x, y], ...], [1 | 0, ...]) or boxed on the first
        frame, through every frame (a SAM 2 video model). `frames` is any iterable of same-size pictures,
        read a window at a time, so memory holds one window. Yields one (H, W) bool mask per frame;
        stops early when keep_going() turns False."""
        import itertools

        import torch
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        if not self.video:
            raise InvalidRequest("mask_points", f"{self.name} is a SAM 2 image model; tracking a click needs a SAM 2 "
                                                "video model (config model_type sam2_video, e.g. facebook/sam2.1-*)")
        frames = iter(frames)
        dtype = self.model.dtype
        seed_mask = None
        while window := list(itertools.islice(frames, self.TRACK_WINDOW)):
            width, height = window[0].size
            sx, sy = self.side / width, self.side / height
            video = torch.cat([_square_pixels(f, self.side, self.mean, self.std) for f in window]).to(self.device, dtype)
            session = Sam2VideoInferenceSession(video=video, video_height=height, video_width=width,
                                                inference_device=self.device, video_storage_device=self.device,
                                                inference_state_device=self.device, dtype=dtype)
            obj = session.obj_id_to_idx(1)
            if seed_mask is None:
                coords = [[x * sx, y * sy] for x, y in (points or [])]
                kinds = list(labels or [])
                if box is not None:  # a box is two corner points labelled 2 and 3, before any click
                    coords = [[box[0] * sx, box[1] * sy], [box[2] * sx, box[3] * sy], *coords]
                    kinds = [2, 3, *kinds]
                session.add_point_inputs(obj, 0, {
                    "point_coords": torch.tensor([[coords]], dtype=dtype, device=self.device),
                    "point_labels": torch.tensor([[kinds]], dtype=torch.int32, device=self.device)})
            else:
                small = torch.nn.functional.interpolate(torch.from_numpy(seed_mask)[None, None].float(),
                                                        size=(self.side, self.side), mode="bilinear", align_corners=False)
                session.add_mask_inputs(obj, 0, (small >= 0.5).to(self.device, dtype))
            session.obj_with_new_inputs = [1]
            with torch.inference_mode():
                self.model(inference_session=session, frame_idx=0)
                for out in self.model.propagate_in_video_iterator(session):
                    logits = torch.nn.functional.interpolate(out.pred_masks[:1].float(), size=(height, width),
                                                             mode="bilinear", align_corners=False)
                    seed_mask = (logits[0, 0] > 0).cpu().numpy()
                    yield seed_mask
                    if not keep_going():
                        return

    def predict(self, image, points, labels, boxes, threshold, multimask: bool):
        if self.video:  # a video model answers a picture as a one-frame clip: one mask
            mask = next(iter(self.track([image], points[0][0] if points else None, labels[0][0] if labels else None,
                                        boxes[0][0] if boxes else None)))
            return mask[None, None], np.ones((1, 1), np.float32)
        import torch

        width, height = image.size
        sx, sy = self.side / width, self.side / height
        dtype = self.model.dtype
        kwargs: dict[str, Any] = {"pixel_values": _square_pixels(image, self.side, self.mean, self.std).to(self.device, dtype)}
        if points is not None:
            scaled = [[[[x * sx, y * sy] for x, y in prompt] for prompt in batch] for batch in points]
            kwargs["input_points"] = torch.tensor(scaled, dtype=dtype, device=self.device)
            kwargs["input_labels"] = torch.tensor(labels, dtype=torch.long, device=self.device)
        if boxes is not None:
            scaled = [[[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in batch] for batch in boxes]
            kwargs["input_boxes"] = torch.tensor(scaled, dtype=dtype, device=self.device)
        with torch.inference_mode():
            out = self.model(**kwargs, multimask_output=multimask)
        logits = torch.nn.functional.interpolate(out.pred_masks[0].float(), size=(height, width), mode="bilinear",
                                                 align_corners=False)
        return (logits > _logit(threshold)).cpu().numpy(), out.iou_scores[0].float().cpu().numpy()


def _preprocessor_config(path: Path) -> dict:
    """A model folder's image-processor settings (preprocessor_config.json, or processor_config.json's
    image_processor part), {} when it has neither."""
    for name in ("preprocessor_config.json", "processor_config.json"):
        try:
            config = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        return config.get("image_processor", config)
    return {}


def _square_pixels(image: "Image.Image", side: int, mean, std):
    """The picture as a SAM 2 / SAM 3 image processor gives it: resized to side x side (no padding),
    rescaled to 0..1 and normalised; (1, 3, side, side) float32."""
    import torch
    from PIL import Image

    pixels = np.asarray(image.convert("RGB").resize((side, side), Image.BILINEAR), np.float32) / 255.0
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


class Sam3(Backend):
    """SAM 3: every instance of a text concept (and/or inside a box). Its image processor needs
    torchvision, so the picture and the words are prepared here as Sam3Processor does (square resize,
    normalise; the CLIP tokenizer padded to 32; boxes as normalised centre-size), and its instance
    post-processing is Sam3ImageProcessor's (presence x query scores, sigmoid masks scaled up). Box
    prompts run inside the model through torchvision's roi_align, so they need torchvision installed."""

    kind, prompts = "sam3", ("text", "box")

    def __init__(self, path: Path, device: str):
        super().__init__(path, device)
        from transformers import AutoTokenizer, Sam3Model

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = Sam3Model.from_pretrained(str(path), local_files_only=True).to(device).eval()
        config = _preprocessor_config(path)
        size = config.get("size") or {}
        self.side = int(size.get("height") or size.get("longest_edge") or self.model.config.vision_config.image_size)
        self.mean = config.get("image_mean", (0.5, 0.5, 0.5))
        self.std = config.get("image_std", (0.5, 0.5, 0.5))

    def run(self, image, request, helper=None) -> list[Found]:
        import importlib.util

        import torch

        if request.box and importlib.util.find_spec("torchvision") is None:
            raise InvalidRequest("box", f"{self.name} (SAM 3) takes a box only with torchvision installed (its model "
                                        "pools the box with torchvision's roi_align): pip install torchvision, or give "
                                        "the box to a SAM or SAM 2 model")
        width, height = image.size
        dtype = self.model.dtype
        pixels = _square_pixels(image, self.side, self.mean, self.std).to(self.device, dtype)
        phrases = split_phrases(request.prompt) if request.prompt else ["visual"]  # Sam3Processor's word for "box only"
        found = []
        for phrase in phrases:
            text = self.tokenizer(phrase, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
            kwargs: dict[str, Any] = {"pixel_values": pixels, "input_ids": text.input_ids.to(self.device),
                                      "attention_mask": text.attention_mask.to(self.device)}
            if request.box:
                x0, y0, x1, y1 = (float(v) for v in request.box)
                box = [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]
                kwargs.update(input_boxes=torch.tensor([[box]], dtype=dtype, device=self.device),
                              input_boxes_labels=torch.tensor([[1]], device=self.device))
            with torch.inference_mode():
                out = self.model(**kwargs)
            scores = out.pred_logits[0].float().sigmoid()
            if out.presence_logits is not None:
                scores = scores * out.presence_logits[0].float().sigmoid()
            keep = scores > request.threshold
            if not keep.any():
                continue
            masks = torch.nn.functional.interpolate(out.pred_masks[0][keep][None].float().sigmoid(), size=(height, width),
                                                    mode="bilinear", align_corners=False)[0] > 0.5
            for mask, score in zip(masks.cpu().numpy(), scores[keep].cpu().tolist()):
                if mask.any():
                    found.append((mask, phrase if request.prompt else "box", float(score)))
        return found


class GroundingDino(Backend):
    """Grounding DINO finds boxes for the words; a SAM of the catalog (if any) cuts each box out,
    else the box itself is the mask."""

    kind, prompts = "grounding-dino", ("text",)

    def __init__(self, path: Path, device: str):
        super().__init__(path, device)
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        self.processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        self.model = GroundingDinoForObjectDetection.from_pretrained(str(path), local_files_only=True).to(device).eval()

    def boxes(self, image, prompt: str, threshold: float) -> list[tuple[list[float], str, float]]:
        import torch

        # Grounding DINO's text format: lower case phrases, each ending with a dot.
        text = " ".join(p.lower() + "." for p in split_phrases(prompt))
        inputs = self.processor(images=image, text=text, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model(**inputs)
        result = self.processor.post_process_grounded_object_detection(
            out, inputs["input_ids"], threshold=threshold, text_threshold=threshold,
            target_sizes=[(image.height, image.width)])[0]
        labels = result.get("text_labels", result.get("labels"))
        return [(box.tolist(), str(label), float(score)) for box, label, score in zip(result["boxes"], labels, result["scores"])]

    def run(self, image, request, helper=None) -> list[Found]:
        found = []
        sam = helper("box") if helper is not None else None
        for box, label, score in self.boxes(image, request.prompt, request.threshold):
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(image.width, x1), min(image.height, y1)
            if x1 <= x0 or y1 <= y0:
                continue
            if isinstance(sam, Sam):
                masks, scores = sam.predict(image, None, None, [[[x0, y0, x1, y1]]], 0.5, multimask=False)
                mask = masks[0, 0]
            else:
                mask = np.zeros((image.height, image.width), bool)
                mask[y0:y1, x0:x1] = True
            if mask.any():
                found.append((mask, label, score))
        return found


class Semantic(Backend):
    """SegFormer, UperNet, ...: every pixel gets a class; one mask per class present."""

    kind, prompts = "semantic", ("none",)

    def __init__(self, path: Path, device: str):
        super().__init__(path, device)
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        self.processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForSemanticSegmentation.from_pretrained(str(path), local_files_only=True).to(device).eval()

    def run(self, image, request, helper=None) -> list[Found]:
        import torch

        inputs = self.processor(images=image, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()
        logits = torch.nn.functional.interpolate(logits, size=(image.height, image.width), mode="bilinear", align_corners=False)
        probs = logits.softmax(dim=1)[0]
        best, labels = probs.max(dim=0)
        labels, best = labels.cpu().numpy(), best.cpu().numpy()
        names = self.model.config.id2label
        found = []
        for class_id in np.unique(labels):
            mask = labels == class_id
            found.append((mask, str(names.get(int(class_id), names.get(str(class_id), class_id))), float(best[mask].mean())))
        return sorted(found, key=lambda f: -int(f[0].sum()))


class Universal(Backend):
    """Mask2Former / MaskFormer / OneFormer: panoptic segments, each a mask with its class and score."""

    kind, prompts = "universal", ("none",)

    def __init__(self, path: Path, device: str):
        super().__init__(path, device)
        import transformers

        self.processor = transformers.AutoProcessor.from_pretrained(str(path), local_files_only=True,
                                                                    **self._metadata_kwargs(path))
        self.model = transformers.AutoModelForUniversalSegmentation.from_pretrained(str(path), local_files_only=True)
        self.model = self.model.to(device).eval()
        # OneFormer's PIL image processor post-processes with torchvision; its outputs (class and mask
        # logits per query) are Mask2Former's, whose PIL post-processing needs none.
        self.post = (transformers.Mask2FormerImageProcessorPil() if self.model.config.model_type == "oneformer"
                     else getattr(self.processor, "image_processor", self.processor))

    @staticmethod
    def _metadata_kwargs(path: Path) -> dict[str, Any]:
        """OneFormer's processor reads a class-info JSON named in its config from the hub
        (shi-labs/oneformer_demo) when the folder lacks it; inference does not need it, and Kiri never
        downloads, so it is read from the folder or left out."""
        import json

        for name in ("preprocessor_config.json", "processor_config.json"):
            try:
                config = json.loads((path / name).read_text())
            except (OSError, ValueError):
                continue
            config = config.get("image_processor", config)
            info = config.get("class_info_file")
            if info and config.get("image_processor_type", "").startswith("OneFormer"):
                return {"repo_path": str(path), "class_info_file": info} if (path / info).is_file() else {"class_info_file": None}
        return {}

    def run(self, image, request, helper=None) -> list[Found]:
        import torch

        kwargs: dict[str, Any] = {"images": image, "return_tensors": "pt"}
        if self.model.config.model_type == "oneformer":
            kwargs["task_inputs"] = ["panoptic"]
        inputs = self.processor(**kwargs).to(self.device)
        with torch.inference_mode():
            out = self.model(**inputs)
        result = self.post.post_process_panoptic_segmentation(out, threshold=request.threshold,
                                                         target_sizes=[(image.height, image.width)])[0]
        segmentation = result["segmentation"].cpu().numpy()
        names = self.model.config.id2label
        found = []
        for segment in result["segments_info"]:
            mask = segmentation == segment["id"]
            if mask.any():
                label_id = int(segment["label_id"])
                found.append((mask, str(names.get(label_id, names.get(str(label_id), label_id))), float(segment["score"])))
        return found


BACKENDS: dict[str, type[Backend]] = {
    "clipseg": ClipSeg, "sam": Sam, "sam2": Sam2, "sam3": Sam3, "grounding-dino": GroundingDino,
    "semantic": Semantic, "universal": Universal,
}
