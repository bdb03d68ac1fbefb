"""Segmentation against the EMBL primary microglia ground-truth masks (border cells included).

The default parameter set (the one that scores potency) is validated here. Acceptance per frame: foreground IoU >= 0.85 and object F1 >= 0.85 (a true cell is found when a
predicted cell overlaps it at IoU >= 0.5), as defined in shared/data/microglia-embl/README.md.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from labsys.potency.analysis import segment
from labsys.potency.parameters import DEFAULT_PARAMETER_SET_NAME, get_parameter_set

DATA = Path(
    os.environ.get(
        "LABSYS_MICROGLIA_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data" / "microglia-embl"
    )
)
PIXEL_SIZE_UM = 0.7552

FRAMES = [
    ("MAX_pg22_1C8hF1--t1.tif", "MAX_pg22_1C8hF1--t1-labelMasks.tif", None),
    *[("MAX_pg6-3CF1_20--t1-3.tif", "MAX_pg6-3CF1_20--t1-3-labelMasks.tif", i) for i in range(3)],
    *[("MAX_pg6-3CF1_20--t1-5.tif", "MAX_pg6-3CF1_20--t1-5-labelMasks.tif", i) for i in range(3)],
]


def foreground_iou(truth: np.ndarray, predicted: np.ndarray) -> float:
    truth_fg, predicted_fg = truth > 0, predicted > 0
    return float((truth_fg & predicted_fg).sum() / (truth_fg | predicted_fg).sum())


def object_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    truth = truth.astype(np.int64)
    predicted = predicted.astype(np.int64)
    n_truth, n_predicted = truth.max() + 1, predicted.max() + 1
    overlap = np.bincount((truth * n_predicted + predicted).ravel(), minlength=n_truth * n_predicted)
    overlap = overlap.reshape(n_truth, n_predicted)
    area_truth = np.bincount(truth.ravel(), minlength=n_truth)
    area_predicted = np.bincount(predicted.ravel(), minlength=n_predicted)
    iou = overlap / np.maximum(area_truth[:, None] + area_predicted[None, :] - overlap, 1)
    true_positives = int((iou[1:, 1:] >= 0.5).any(axis=1).sum())
    count_truth = int((area_truth[1:] > 0).sum())
    count_predicted = int((area_predicted[1:] > 0).sum())
    return 2 * true_positives / (count_truth + count_predicted)


def test_metrics_detect_a_bad_segmentation():
    truth = np.zeros((20, 20), np.int32)
    truth[2:8, 2:8] = 1
    truth[12:18, 12:18] = 2
    assert object_f1(truth, truth) == 1.0
    shifted = np.roll(truth, 4, axis=1)
    assert object_f1(truth, shifted) < 0.5
    assert foreground_iou(truth, shifted) < 0.6


@pytest.mark.parametrize("image_name, mask_name, frame", FRAMES, ids=[f"{m}-{f}" for _, m, f in FRAMES])
def test_microglia_segmentation_matches_ground_truth(image_name, mask_name, frame):
    image = tifffile.imread(DATA / image_name)
    truth = tifffile.imread(DATA / mask_name)
    if frame is not None:
        image, truth = image[frame], truth[frame]
    predicted = segment(image, PIXEL_SIZE_UM, get_parameter_set(DEFAULT_PARAMETER_SET_NAME))
    iou, f1 = foreground_iou(truth, predicted), object_f1(truth, predicted)
    print(f"{image_name} frame {frame}: foreground IoU {iou:.3f}, object F1 {f1:.3f}, "
          f"cells true {len(np.unique(truth)) - 1} found {predicted.max()}")
    assert iou >= 0.85
    assert f1 >= 0.85
