"""The fast segmentation helpers give the same result as the plain scipy/scikit-image operations
they replace, and the seed scale adapts to the objects."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import morphology, segmentation
from skimage.draw import disk

from labsys.potency import analysis
from labsys.potency.analysis import segment
from labsys.potency.measures import _hull_area_px
from labsys.potency.mosaic import boxes_of, mosaic
from labsys.potency.parameters import DEFAULT_PARAMETER_SET_NAME, get_parameter_set

PARAMS = get_parameter_set(DEFAULT_PARAMETER_SET_NAME)


def random_mask(seed=0, shape=(120, 150), density=0.55):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 2) > density


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fill_holes_and_dilation_match_scipy(seed):
    mask = random_mask(seed)
    assert np.array_equal(analysis._fill_holes(mask), ndi.binary_fill_holes(mask))
    for iterations in (1, 2, 3):
        assert np.array_equal(analysis._dilate_cross(mask, iterations), ndi.binary_dilation(mask, iterations=iterations))


@pytest.mark.parametrize("size", [3, 7, 13])
def test_median_filter_matches_scipy(size):
    image = np.random.default_rng(size).random((37, 53)).astype(np.float32)
    assert np.array_equal(analysis._median_filter(image, size), ndi.median_filter(image, size=size, mode="reflect"))


def test_background_follows_a_smooth_illumination_and_ignores_cells():
    rows, cols = np.mgrid[0:300, 0:400].astype(np.float32)
    illumination = 1000 + 0.5 * rows + 0.3 * cols
    image = illumination.copy()
    image[disk((150, 200), 8)] += 3000
    background = analysis._background(image, window_px=73)
    assert background.shape == image.shape
    assert np.abs(background - illumination)[20:-20, 20:-20].max() < 5


def test_mosaic_distance_and_flood_match_the_whole_field():
    mask = random_mask(3, shape=(160, 200), density=0.6)
    parts, count = ndi.label(mask)
    wanted = np.ones(count + 1, dtype=bool)
    wanted[0] = False
    distance = analysis._distance_um(mask, parts, boxes_of(parts), wanted, 1.0)
    assert np.allclose(distance[mask], ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1][mask])

    seed_image = ndi.gaussian_filter(np.random.default_rng(4).random(mask.shape), 2).astype(np.float32)
    peaks = (seed_image == ndi.maximum_filter(seed_image, 3)) & mask
    markers, _ = ndi.label(peaks, structure=np.ones((3, 3)))
    expected = segmentation.watershed(-seed_image, markers, mask=mask)
    regions = np.zeros(mask.shape, dtype=np.int32)
    analysis._flood_parts(regions, seed_image, markers, parts, np.arange(1, count + 1), boxes_of(parts))
    assert np.array_equal(regions, expected)


def test_mosaic_keeps_boxes_apart():
    mask = random_mask(5)
    parts, count = ndi.label(mask)
    pixels, place, shape = mosaic(parts, np.arange(1, count + 1), boxes_of(parts))
    tiles = np.zeros(shape, dtype=np.int32)
    tiles[place] = parts.ravel()[pixels]
    assert pixels.size == mask.sum()
    # Every part stays one piece and no two parts touch, even diagonally.
    assert ndi.label(tiles > 0, structure=np.ones((3, 3)))[1] == count
    assert np.prod(shape) < 3 * np.prod(mask.shape)


def test_hull_area_matches_the_convex_hull_image():
    labels = np.zeros((80, 80), np.int32)
    labels[10:30, 10:60] = 1
    labels[30:70, 25:35] = 1
    labels[disk((55, 60), 9)] = 2
    count = 2
    mean_r = np.r_[0, [np.nonzero(labels == i)[0].mean() for i in (1, 2)]]
    mean_c = np.r_[0, [np.nonzero(labels == i)[1].mean() for i in (1, 2)]]
    hull = _hull_area_px(labels, count, mean_r, mean_c)
    for label in (1, 2):
        expected = morphology.convex_hull_image(labels == label).sum()
        assert hull[label] == pytest.approx(expected, rel=0.05)


def ramified_cell_field():
    """A bright soma with four long thin, beaded processes (a primary-microglia-like cell, about
    1,300 µm² at 1 µm/pixel) and, apart from it, two touching round BV2-like cells."""
    image = np.full((260, 260), 10.0)
    image[disk((80, 80), 15)] = 220
    for dr, dc in ((1, 0), (0, 1), (-1, 0), (0, -1)):
        for step in range(14, 66):
            r, c = 80 + dr * step, 80 + dc * step
            image[r - 1 : r + 2, c - 1 : c + 2] = 90 + 60 * (1 + np.sin(step / 4.0)) / 2
    image[disk((190, 180), 7)] = 200
    image[disk((190, 194), 7)] = 200
    rng = np.random.default_rng(1)
    return (image + rng.normal(0, 2, image.shape)).clip(0, 255).astype(np.uint8)


def test_ramified_cell_keeps_its_processes_and_touching_round_cells_still_split():
    image = ramified_cell_field()
    labels = segment(image, 1.0, PARAMS)
    single_scale = dataclasses.replace(PARAMS, large_cell_min_area_um2=0.0, ramified_max_circularity=0.0)
    fragments = segment(image, 1.0, single_scale)
    cell = labels[78:83, 78:83].max()
    # The whole ramified cell is one object with the adaptive seed scale ...
    assert len(np.unique(labels[(labels > 0) & (np.hypot(*(np.mgrid[0:260, 0:260] - 80)) < 70)])) == 1
    assert labels[80, 140] == cell and labels[140, 80] == cell
    # ... the touching round cells are still two.
    assert labels[190, 178] != labels[190, 196] and labels[190, 178] > 0 and labels[190, 196] > 0
    # And the adaptive pass is what keeps the cell whole here.
    assert fragments.max() > labels.max()


@pytest.mark.parametrize("sigma", [0.85, 1.9, 4.5])
def test_gaussian_matches_scipy(sigma):
    image = (np.random.default_rng(7).random((90, 70)) * 1000).astype(np.float32)
    expected = ndi.gaussian_filter(image, sigma, truncate=3.0)
    assert np.allclose(analysis._gaussian(image, sigma), expected, atol=1e-3)
