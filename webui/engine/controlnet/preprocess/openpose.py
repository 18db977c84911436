"""OpenPose's 18-keypoint stick figure, drawn as ControlNet's openpose models expect.

Keypoints (OpenPose / COCO-18 order): 0 nose, 1 neck, 2 right shoulder, 3 right elbow, 4 right wrist,
5 left shoulder, 6 left elbow, 7 left wrist, 8 right hip, 9 right knee, 10 right ankle, 11 left hip,
12 left knee, 13 left ankle, 14 right eye, 15 left eye, 16 right ear, 17 left ear. The limbs, their
colours, the 0.6 dimming of limbs and the joint dots follow ControlNet's annotator/openpose/util.py.
"""

from __future__ import annotations

import math

from ._cv import cv2
import numpy as np

# Limbs as pairs of keypoint indices (0-based); only the first 17 are drawn, as in OpenPose's draw_bodypose.
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]
COLOURS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]
# COCO-17 (VitPose, RT-DETR pose models) to OpenPose-18: OpenPose index i takes COCO index COCO_TO_OPENPOSE[i];
# the neck (None) is the middle of the shoulders.
COCO_TO_OPENPOSE = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]


def coco_to_openpose(keypoints: np.ndarray, scores: np.ndarray, threshold: float = 0.3) -> np.ndarray:
    """(17, 2) COCO keypoints and their scores -> (18, 2) OpenPose keypoints, NaN where not seen."""
    kp = np.asarray(keypoints, np.float32).reshape(17, 2).copy()
    kp[np.asarray(scores).reshape(17) < threshold] = np.nan
    out = np.full((18, 2), np.nan, np.float32)
    for i, j in enumerate(COCO_TO_OPENPOSE):
        out[i] = (kp[5] + kp[6]) / 2 if j is None else kp[j]
    return out


def draw_bodypose(canvas: np.ndarray, people: list[np.ndarray], stickwidth: int = 4) -> np.ndarray:
    """Draw each person's (18, 2) pixel keypoints (NaN = missing) on an HxWx3 uint8 canvas; returns a new canvas."""
    canvas = canvas.copy()
    for person in people:
        for i, (p, q) in enumerate(LIMBS):
            (x0, y0), (x1, y1) = person[p], person[q]
            if not np.isfinite([x0, y0, x1, y1]).all():
                continue
            length = math.hypot(x1 - x0, y1 - y0)
            angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
            polygon = cv2.ellipse2Poly((int((x0 + x1) / 2), int((y0 + y1) / 2)), (int(length / 2), stickwidth),
                                       int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, COLOURS[i])
    canvas = (canvas * 0.6).astype(np.uint8)
    for person in people:
        for i, (x, y) in enumerate(person):
            if np.isfinite([x, y]).all():
                cv2.circle(canvas, (int(x), int(y)), stickwidth, COLOURS[i], thickness=-1)
    return canvas
