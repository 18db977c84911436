"""ControlNet preprocessors: each module on small drawn pictures, checked against what it should make.

The weight-free modules run on a 64x64 black picture with a white square (or a kiri_world scene);
the annotator modules run tiny random-weight transformers models (Depth Anything, DPT, VitPose,
RT-DETR) saved to a temporary folder, and the pose drawing is checked on known keypoints.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import pytest

from tools import kiri_world as kw
from webui.engine.controlnet.preprocess import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    Preprocessor,
    Preprocessors,
    Slider,
    at_resolution,
    builtin_preprocessors,
    clear_cache,
    coco_to_openpose,
    draw_bodypose,
    inpaint_condition,
    normals_from_depth,
)
from webui.engine.controlnet.preprocess import annotators, openpose as op
from webui.engine.core.errors import InvalidRequest

WEIGHTLESS = ["none", "invert", "canny", "scribble_xdog", "lineart_standard", "softedge_sobel", "tile_resample",
              "blur_gaussian", "shuffle", "inpaint_only", "inpaint", "segmentation"]


@pytest.fixture(scope="module")
def reg() -> Preprocessors:
    return Preprocessors(builtin_preprocessors())


def square(size: int = 64, lo: int = 16, hi: int = 48) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    img[lo:hi, lo:hi] = 255
    return img


def border_distance(size: int = 64, lo: int = 16, hi: int = 48) -> np.ndarray:
    """Each pixel's distance (pixels) to the square's outline."""
    inside = np.zeros((size, size), np.uint8)
    inside[lo:hi, lo:hi] = 1
    d_in = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    d_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)
    return np.maximum(d_in, d_out)


def high_frequency(img: np.ndarray) -> float:
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.mean(cv2.Laplacian(grey, cv2.CV_32F) ** 2))


@functools.cache
def _scene() -> np.ndarray:
    s = kw.scene_from_parts([("large", "red", "star", "left"), ("small", "blue", "circle", "right")], ("yellow",))
    return kw.render(s)


def scene() -> np.ndarray:
    return _scene().copy()


# ----- weight-free modules -----------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [64, 512])
def test_canny_edges_lie_on_the_square_border(reg, resolution):
    out = reg.run("canny", square(), resolution=resolution, threshold_a=100, threshold_b=200)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    edges = out[:, :, 0] > 127
    d = border_distance()
    assert edges.sum() > 60
    assert d[edges].max() <= 2.5  # every edge pixel hugs the outline
    assert not edges[d > 4].any()  # nothing deep inside or far outside
    near = d <= 1.5
    covered = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert covered[near].mean() > 0.8  # and the outline is traced all round


def test_canny_thresholds_matter(reg):
    img = cv2.GaussianBlur(square() // 6, (0, 0), 2.0)  # faint soft edges: a high threshold drops them
    low = (reg.run("canny", img, 64, 5, 10)[:, :, 0] > 0).sum()
    high = (reg.run("canny", img, 64, 250, 255)[:, :, 0] > 0).sum()
    assert low > 40 and high < low / 2


def test_invert_flips_and_answers_to_its_a1111_name(reg):
    drawing = np.full((32, 40, 3), 255, np.uint8)
    cv2.line(drawing, (2, 2), (30, 20), (0, 0, 0), 2)
    out = reg.run("invert", drawing)
    assert np.array_equal(out, 255 - drawing)
    assert np.array_equal(reg.run("invert (from white bg & black line)", drawing), out)
    assert out[0, 39].tolist() == [0, 0, 0] and out[2, 2].tolist() == [255, 255, 255]


@pytest.mark.parametrize("module, far", [("scribble_xdog", 10), ("lineart_standard", 18), ("softedge_sobel", 10)])
def test_line_modules_draw_near_the_borders_only(reg, module, far):
    out = reg.run(module, square(), resolution=64)
    strength = out[:, :, 0].astype(np.float32)
    d = border_distance()
    assert np.array_equal(out[:, :, 0], out[:, :, 1])  # a grey map
    assert strength[d <= 3].mean() > 40
    assert strength[d > far].max() <= 8  # flat areas stay black (lineart's blur reaches further)
    assert strength[d <= 3].mean() > 5 * (strength[d > 6].mean() + 1)


def test_xdog_threshold_trades_line_amount(reg):
    # XDoG draws where a pixel is darker than its surroundings in every channel: dark shapes on white
    parts = [("large", "black", "star", "left"), ("small", "purple", "circle", "right")]
    img = kw.render(kw.scene_from_parts(parts, ("white",)))
    few = (reg.run("scribble_xdog", img, 64, threshold_a=60)[:, :, 0] > 0).sum()
    many = (reg.run("scribble_xdog", img, 64, threshold_a=4)[:, :, 0] > 0).sum()
    assert many > few > 0


def test_softedge_blur_spreads_the_edges(reg):
    d = border_distance()
    sharp = reg.run("softedge_sobel", square(), 64, threshold_a=0)[:, :, 0]
    soft = reg.run("softedge_sobel", square(), 64, threshold_a=4)[:, :, 0]
    ring = (d > 3) & (d < 7)
    assert soft[ring].mean() > sharp[ring].mean() + 10


def test_tile_resample_is_blurrier_at_the_same_size(reg):
    img = scene()
    same = reg.run("tile_resample", img, threshold_a=1.0)
    assert np.array_equal(same, img)  # under 1.1 the picture is left alone, as sd-webui-controlnet does
    out = reg.run("tile_resample", img, threshold_a=4)
    assert out.shape == img.shape
    assert high_frequency(out) < 0.5 * high_frequency(img)
    assert abs(out.astype(np.float32).mean() - img.astype(np.float32).mean()) < 6


def test_blur_gaussian_works_at_the_processing_resolution(reg):
    # sigma is in processing pixels: 4 at 512 (8x the picture) blurs far less than 4 at 64
    img = square()
    at_64 = reg.run("blur_gaussian", img, resolution=64, threshold_a=4)
    at_512 = reg.run("blur_gaussian", img, resolution=512, threshold_a=4)
    assert at_64.shape == at_512.shape == img.shape
    assert high_frequency(at_512) > 4 * high_frequency(at_64)


def test_processing_happens_at_resolution_on_the_short_side_padded_to_64():
    seen = []

    def record(x):
        seen.append(x.shape)
        return x

    img = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    out = at_resolution(img, 100, record)
    assert seen == [(128, 192, 3)]  # 100 x 167 padded up to multiples of 64
    assert out.shape == img.shape


def test_shuffle_keeps_the_colours_scrambles_the_layout_and_repeats(reg):
    img = scene()
    a = reg.run("shuffle", img)
    assert np.array_equal(a, reg.run("shuffle", img))
    assert np.array_equal(a, reg.run("shuffle", img, threshold_a=-1))  # -1 is the default seed
    b = reg.run("shuffle", img, threshold_a=7)
    assert not np.array_equal(a, b)
    assert np.abs(a.astype(int) - img.astype(int)).mean() > 20  # the layout moved

    def hist(x):
        return np.concatenate([np.histogram(x[:, :, c], bins=8, range=(0, 256))[0] for c in range(3)]) / x[:, :, 0].size

    assert np.abs(hist(a) - hist(img)).sum() < 0.6
    assert np.abs(hist(a) - hist(img)).sum() < np.abs(hist(255 - img) - hist(img)).sum() / 2


@pytest.mark.parametrize("module", ["inpaint_only", "inpaint", "inpaint_global_harmonious"])
def test_inpaint_marks_the_masked_pixels(reg, module):
    img = scene()
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 5:50] = 255
    out = reg.run(module, img, mask=mask)
    assert (out[10:30, 5:50] == 0).all()
    keep = mask == 0
    assert np.array_equal(out[keep], img[keep])
    cond = inpaint_condition(out, mask)
    assert cond.dtype == np.float32 and (cond[10:30, 5:50] == -1).all()
    assert np.allclose(cond[keep], img[keep] / 255.0)
    with pytest.raises(InvalidRequest) as e:
        reg.run(module, img)
    assert e.value.field == "mask"


def test_inpaint_mask_of_another_size_is_scaled(reg):
    img = scene()
    mask = np.zeros((32, 32), bool)
    mask[:16] = True
    out = reg.run("inpaint_only", img, mask=mask)
    assert (out[:32] == 0).all() and np.array_equal(out[32:], img[32:])


def test_segmentation_colours_regions_distinctly(reg):
    a = np.zeros((64, 64), bool)
    a[:20] = True
    b = np.zeros((64, 64), np.uint8)
    b[40:, 30:] = 255
    out = reg.run("seg_from_masks", scene(), mask=[a, b])
    assert out[5, 5].tolist() == ADE20K_PALETTE[0].tolist()
    assert out[60, 60].tolist() == ADE20K_PALETTE[1].tolist()
    assert out[30, 10].tolist() == [0, 0, 0]  # covered by no mask
    assert len({tuple(c) for c in out.reshape(-1, 3)}) == 3
    # the same from a stack and from a label map (0 = unlabelled, k = class k-1)
    assert np.array_equal(reg.run("segmentation", scene(), mask=np.stack([a, b > 0])), out)
    labels = np.zeros((64, 64), np.int32)
    labels[:20] = 1
    labels[40:, 30:] = 2
    assert np.array_equal(reg.run("segmentation", scene(), mask=labels), out)
    labels[20:40] = 5
    many = reg.run("segmentation", scene(), mask=labels)
    assert many[30, 0].tolist() == ADE20K_PALETTE[4].tolist()
    # naming the classes gives their colours: a person in crimson under a cyan sky
    named = reg.run("segmentation", scene(), mask={"person": b, "Sky": a, 4: labels == 5})
    assert named[60, 60].tolist() == [150, 5, 61] and named[5, 5].tolist() == [6, 230, 230]
    assert named[30, 0].tolist() == ADE20K_PALETTE[4].tolist() and ADE20K_CLASSES[4] == "tree"
    with pytest.raises(InvalidRequest) as e:
        reg.run("segmentation", scene(), mask={"unicorn": a})
    assert e.value.field == "mask" and "person" in str(e.value)
    with pytest.raises(InvalidRequest) as e:
        reg.run("segmentation", scene())
    assert e.value.field == "mask"


@pytest.mark.parametrize("module", WEIGHTLESS)
def test_output_has_the_input_size_for_any_picture_form(reg, module):
    rng = np.random.default_rng(1)
    mask = np.zeros((50, 70), np.uint8)
    mask[:25] = 255
    grey = cv2.resize(cv2.cvtColor(scene(), cv2.COLOR_RGB2GRAY), (70, 50))
    rgba = np.dstack([cv2.resize(scene(), (70, 50)), rng.integers(0, 256, (50, 70), dtype=np.uint8)])
    for picture in (grey, grey[:, :, None], rgba, cv2.resize(scene(), (70, 50))):
        out = reg.run(module, picture, resolution=128, mask=mask)
        assert out.shape == (50, 70, 3) and out.dtype == np.uint8


def test_rgba_is_composited_on_white_and_grey_is_spread(reg):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4, 3] = 255  # left half opaque black, right half transparent
    out = reg.run("none", rgba)
    assert (out[:, :4] == 0).all() and (out[:, 4:] == 255).all()
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert np.array_equal(reg.run("none", grey), np.dstack([grey] * 3))


# ----- validation and the registry ---------------------------------------------------------------


@pytest.mark.parametrize("kwargs, field", [
    ({"threshold_a": float("nan")}, "threshold_a"),
    ({"threshold_a": 0}, "threshold_a"),
    ({"threshold_b": 300}, "threshold_b"),
    ({"threshold_b": "lots"}, "threshold_b"),
    ({"resolution": 10}, "processor_res"),
    ({"resolution": float("inf")}, "processor_res"),
    ({"resolution": 4096}, "processor_res"),
])
def test_bad_numbers_name_their_field(reg, kwargs, field):
    with pytest.raises(InvalidRequest) as e:
        reg.run("canny", square(), **kwargs)
    assert e.value.field == field


def test_defaults_and_ignored_sliders(reg):
    img = scene()
    default = reg.run("canny", img)
    assert np.array_equal(reg.run("canny", img, -1, -1, -1), default)
    assert np.array_equal(reg.run("canny", img, 512, 100, 200), default)
    assert np.array_equal(reg.run("canny", img, "512", "100", "200"), default)  # form fields come as text
    faint = img // 12  # low contrast: the thresholds decide whether its border is an edge
    assert not np.array_equal(reg.run("canny", faint, 512, 10, 20), reg.run("canny", faint))
    # a module without the slider ignores what webuiapi sends for it (64, 64) and odd resolutions
    assert np.array_equal(reg.run("invert", img, 7, 64, 64), 255 - img)
    with pytest.raises(InvalidRequest) as e:
        reg.run("tile_resample", img, threshold_a=64)  # tile has the slider: 64 is out of 1..8
    assert e.value.field == "threshold_a"


def test_unknown_module_lists_the_names(reg):
    with pytest.raises(InvalidRequest) as e:
        reg.get("cany")
    assert e.value.field == "module" and "canny" in str(e.value) and "scribble_xdog" in str(e.value)
    assert reg.get("CANNY").name == "canny"
    assert "depth_midas" in reg and "nope" not in reg


def test_detail_has_sd_webui_controlnet_shape(reg):
    detail = reg.detail()
    assert list(detail) == reg.names() and reg.names()[0] == "none"
    assert set(WEIGHTLESS) <= set(detail)
    for name, entry in detail.items():
        assert set(entry) == {"model_free", "sliders"} and entry["model_free"] is False
        for s in entry["sliders"]:
            assert set(s) == {"name", "value", "min", "max", "step"}
            assert s["min"] <= s["value"] <= s["max"]
    assert detail["canny"]["sliders"] == [
        {"name": "Resolution", "value": 512, "min": 64, "max": 2048, "step": 8},
        {"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
        {"name": "High Threshold", "value": 200, "min": 1, "max": 255, "step": 1},
    ]
    assert detail["none"]["sliders"] == [] and detail["invert"]["sliders"] == []
    assert [s["name"] for s in detail["tile_resample"]["sliders"]] == ["Down Sampling Rate"]
    assert detail["scribble_xdog"]["sliders"][1]["value"] == 32


def test_registry_add_override_and_ip_adapter_passthrough():
    reg = Preprocessors(builtin_preprocessors())
    with pytest.raises(ValueError):
        reg.add(Preprocessor("canny", lambda img, *a, **k: img))
    with pytest.raises(ValueError):
        reg.add(Preprocessor("edges", lambda img, *a, **k: img, aliases=("invert",)))
    reg.add(Preprocessor("canny", lambda img, *a, **k: 255 - img), override=True)
    assert np.array_equal(reg.run("canny", square()), 255 - square())
    reg.add(Preprocessor("ip-adapter_clip_h", lambda img, *a, **k: img, kind="ip-adapter"))
    assert reg.get("ip-adapter_clip_h").kind == "ip-adapter"
    with pytest.raises(ValueError):
        Slider("Bad", 10, 0, 5)
    # an extension's map of another size is scaled back to the input's size
    reg.add(Preprocessor("tiny", lambda img, *a, **k: img[::2, ::2]))
    assert reg.run("tiny", np.zeros((30, 50), np.uint8)).shape == (30, 50, 3)


@pytest.mark.parametrize("module, kind", [("depth_anything", "depth"), ("depth_midas", "depth"),
                                          ("normal_from_depth", "depth"), ("dw_openpose_full", "pose")])
def test_modules_needing_weights_say_which(reg, module, kind):
    assert reg.get(module).needs == kind
    for services in (None, lambda k: None):
        with pytest.raises(InvalidRequest) as e:
            reg.run(module, scene(), services=services)
        assert e.value.field == "module" and f"models/annotators/{kind}" in str(e.value)


# ----- normals and pose drawing (no weights) -----------------------------------------------------


def test_normals_from_a_depth_ramp_face_the_right_way():
    ramp = np.tile(np.linspace(0.5, 1.0, 64, dtype=np.float32), (64, 1))  # right side nearer: faces left
    n = normals_from_depth(ramp, background=0.4)[16:48, 16:48].reshape(-1, 3).astype(int)
    assert (n[:, 0] > 150).all() and (abs(n[:, 1] - 128) <= 1).all() and (n[:, 2] > 128).all()
    floor = ramp.T.copy()  # bottom nearer: faces up
    n = normals_from_depth(floor)[16:48, 16:48].reshape(-1, 3).astype(int)
    assert (n[:, 1] > 150).all() and (abs(n[:, 0] - 128) <= 1).all()
    flat = normals_from_depth(np.full((8, 8), 0.7, np.float32))
    assert (flat.reshape(-1, 3) == [128, 128, 255]).all()
    background = normals_from_depth(ramp * 0.3)  # all under the background threshold: facing the viewer
    assert (background.reshape(-1, 3) == [128, 128, 255]).all()


def test_pose_drawing_puts_openpose_colours_on_the_limbs():
    person = np.full((18, 2), np.nan, np.float32)
    person[1] = (50, 20)  # neck
    person[2] = (30, 20)  # right shoulder
    person[3] = (30, 60)  # right elbow
    canvas = draw_bodypose(np.zeros((100, 100, 3), np.uint8), [person])
    dim = lambda c: [int(v * 0.6) for v in c]  # noqa: E731
    assert canvas[20, 40].tolist() == dim(op.COLOURS[0])  # neck - right shoulder: limb 0, red
    assert canvas[45, 30].tolist() == dim(op.COLOURS[2])  # right shoulder - elbow: limb 2, orange
    assert canvas[20, 50].tolist() == list(op.COLOURS[1])  # the neck's dot, undimmed
    assert canvas[60, 30].tolist() == list(op.COLOURS[3])  # the elbow's dot
    assert canvas[80, 80].tolist() == [0, 0, 0] and canvas[45, 60].tolist() == [0, 0, 0]
    lit = canvas.max(axis=2) > 0
    assert lit.sum() < 700  # two thin limbs, not a filled area


def test_coco_keypoints_map_onto_openpose_order():
    coco = np.array([[i * 10.0, i] for i in range(17)], np.float32)
    scores = np.ones(17)
    scores[9] = 0.1  # left wrist unseen
    pose = coco_to_openpose(coco, scores)
    assert pose[0].tolist() == coco[0].tolist()  # nose
    assert pose[1].tolist() == ((coco[5] + coco[6]) / 2).tolist()  # neck between the shoulders
    assert pose[2].tolist() == coco[6].tolist() and pose[5].tolist() == coco[5].tolist()  # right, left shoulder
    assert pose[8].tolist() == coco[12].tolist() and pose[17].tolist() == coco[3].tolist()  # right hip, left ear
    assert np.isnan(pose[7]).all()  # left wrist dropped


# ----- tiny transformers models ------------------------------------------------------------------


@pytest.fixture(scope="module")
def annotator_folders(tmp_path_factory):
    import torch
    from transformers import (DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTConfig,
                              DPTForDepthEstimation, DPTImageProcessor, RTDetrConfig, RTDetrForObjectDetection,
                              RTDetrImageProcessor, RTDetrResNetConfig, VitPoseBackboneConfig, VitPoseConfig,
                              VitPoseForPoseEstimation, VitPoseImageProcessor)

    root = tmp_path_factory.mktemp("annotators")
    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                            image_size=56, patch_size=14, out_features=["stage1", "stage2"],
                            reshape_hidden_states=False)
    DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, reassemble_factors=[1, 1], neck_hidden_sizes=[16, 32],
        fusion_hidden_size=16, head_hidden_size=8, patch_size=14)).save_pretrained(root / "depth_anything")
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      do_pad=False).save_pretrained(root / "depth_anything")
    torch.manual_seed(0)
    DPTForDepthEstimation(DPTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, image_size=64, patch_size=16,
        backbone_out_indices=[0, 1], neck_hidden_sizes=[16, 32], reassemble_factors=[1, 1], fusion_hidden_size=16,
        is_hybrid=False)).save_pretrained(root / "dpt")
    DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False).save_pretrained(root / "dpt")
    torch.manual_seed(0)
    pose_backbone = VitPoseBackboneConfig(image_size=[64, 48], patch_size=[16, 16], hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=2, mlp_ratio=2, out_indices=[2])
    VitPoseForPoseEstimation(VitPoseConfig(backbone_config=pose_backbone, num_labels=17)).save_pretrained(root / "pose")
    VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(root / "pose")
    torch.manual_seed(0)
    det_backbone = RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                      layer_type="basic", out_features=["stage2", "stage3", "stage4"])
    RTDetrForObjectDetection(RTDetrConfig(
        backbone_config=det_backbone, encoder_hidden_dim=16, encoder_in_channels=[16, 32, 64], feat_strides=[8, 16, 32],
        encoder_ffn_dim=32, encoder_attention_heads=2, d_model=16, num_queries=10, decoder_layers=1,
        decoder_ffn_dim=32, decoder_attention_heads=2, decoder_n_points=2, num_feature_levels=3,
        decoder_in_channels=[16, 16, 16], num_denoising=0, num_labels=2, id2label={0: "person", 1: "cat"},
        label2id={"person": 0, "cat": 1}, anchor_image_size=None)).save_pretrained(root / "detector")
    RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(root / "detector")
    yield root
    clear_cache()


def services_for(**folders):
    return lambda kind: folders.get(kind)


@pytest.mark.parametrize("module, folder", [("depth_anything", "depth_anything"), ("depth_dpt", "dpt"),
                                            ("depth", "dpt")])
def test_depth_from_a_tiny_model(reg, annotator_folders, module, folder):
    img = cv2.resize(scene(), (56, 40))
    out = reg.run(module, img, services=services_for(depth=annotator_folders / folder))
    assert out.shape == (40, 56, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :, 0], out[:, :, 2])  # grey
    assert out.min() == 0 and out.max() == 255  # normalised relative depth
    other = "dpt" if folder == "depth_anything" else "depth_anything"
    with pytest.raises(InvalidRequest) as e:  # the module names its architecture; no silent substitute
        reg.run(module, img, services=services_for(depth=annotator_folders / other))
    assert e.value.field == "module"


def test_depth_folder_without_a_preprocessor_config_uses_the_models_defaults(reg, annotator_folders, tmp_path):
    import shutil

    bare = tmp_path / "dpt-bare"
    shutil.copytree(annotator_folders / "dpt", bare)
    (bare / "preprocessor_config.json").unlink()
    out = reg.run("depth_midas", cv2.resize(scene(), (50, 30)), services=services_for(depth=bare))
    assert out.shape == (30, 50, 3) and out.max() == 255


def test_normal_map_from_a_tiny_depth_model(reg, annotator_folders):
    img = cv2.resize(scene(), (48, 40))
    out = reg.run("normal_from_depth", img, threshold_a=0.0, services=services_for(depth=annotator_folders / "dpt"))
    assert out.shape == (40, 48, 3)
    n = out.astype(np.float32) / 127.5 - 1
    assert np.allclose(np.linalg.norm(n, axis=2), 1, atol=0.03)  # unit normals
    assert (out[:, :, 2] >= 127).all()  # all face the viewer's half-space
    assert out.reshape(-1, 3).std(axis=0).max() > 1  # not flat: the depth has relief


def test_openpose_from_a_tiny_vitpose(reg, annotator_folders, monkeypatch):
    img = cv2.resize(scene(), (60, 80))
    services = services_for(pose=annotator_folders / "pose")
    people = annotators.detect_people(img, services)
    assert len(people) == 1 and people[0].shape == (18, 2)  # no detector: the whole picture is one person
    monkeypatch.setattr(annotators, "KEYPOINT_THRESHOLD", -1.0)  # random weights score low: draw every keypoint
    seen = annotators.detect_people(img, services)[0]
    assert np.isfinite(seen).all()
    # in the picture's pixels around the whole-picture box (VitPose widens it by 1.25, random heatmaps spill over)
    assert (np.abs(seen[:, 0] - 30) <= 30 * 1.5).all() and (np.abs(seen[:, 1] - 40) <= 40 * 1.5).all()
    out = reg.run("openpose", img, resolution=128, services=services)
    assert out.shape == (80, 60, 3) and out.dtype == np.uint8
    assert (out.max(axis=2) > 0).sum() > 30  # a stick figure was drawn
    assert reg.run("dw_openpose_full", img, resolution=128, services=services).shape == (80, 60, 3)


def test_openpose_with_a_tiny_person_detector(reg, annotator_folders, monkeypatch):
    img = cv2.resize(scene(), (64, 64))
    services = services_for(pose=annotator_folders / "pose", detector=annotator_folders / "detector")
    monkeypatch.setattr(annotators, "PERSON_THRESHOLD", 0.0)
    boxes = annotators._person_boxes(img, services, "cpu")
    assert boxes  # the random detector's person boxes pass at threshold 0, its "cat" boxes do not count
    for x, y, w, h in boxes:
        assert w > 0 and h > 0 and x + w <= 64 + 1e-3 and y + h <= 64 + 1e-3
    assert len(annotators.detect_people(img, services)) == len(boxes)
    monkeypatch.setattr(annotators, "PERSON_THRESHOLD", 1.01)  # nobody found: a black map
    assert not reg.run("openpose", img, services=services).any()


def test_pose_folder_of_the_wrong_kind_is_refused(reg, annotator_folders):
    with pytest.raises(InvalidRequest) as e:
        reg.run("openpose", scene(), services=services_for(pose=annotator_folders / "dpt"))
    assert e.value.field == "module" and "VitPose" in str(e.value)
    assert math.isfinite(reg.get("openpose").resolution.value)


def test_edges_of_a_picture_smaller_than_the_resolution_are_found_at_its_own_size(reg):
    """At the default 512 an upscaled 64 px picture is too smooth for canny's thresholds: edge modules
    work at the picture's own size instead, so the map matches cv2.Canny on the picture."""
    import cv2

    img = scene()
    assert img.shape[0] < 512
    expected = cv2.Canny(img, 100, 200)
    got = reg.run("canny", img, 512, 100, 200)[:, :, 0]
    assert expected.any() and np.array_equal(got > 127, expected > 127)
