"""Per-cell measures, segmentation rules, classification, parameter sets and image reading."""

import dataclasses
import io

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from PIL import Image
from skimage.draw import disk, ellipse

from labsys.potency import analysis
from labsys.potency.analysis import (
    ALGORITHM_VERSION,
    classify_cells,
    exclude_border_cells,
    measure_cells,
    outline_overlay,
    score_field,
    segment,
)
from labsys.potency.image_files import UnreadableImage, read_fields
from labsys.potency.parameters import (
    DEFAULT_PARAMETER_SET_NAME,
    PARAMETER_SETS,
    ParameterSet,
    get_parameter_set,
)

PARAMS = get_parameter_set(DEFAULT_PARAMETER_SET_NAME)


def disk_labels(radius=20, shape=(80, 80)):
    labels = np.zeros(shape, np.int32)
    labels[disk((shape[0] // 2, shape[1] // 2), radius)] = 1
    return labels


def test_disk_measures_are_those_of_a_disk():
    cells = measure_cells(disk_labels(20), pixel_size_um=0.5)
    assert cells["area_um2"][0] == pytest.approx(np.pi * 10**2, rel=0.03)
    assert cells["perimeter_um"][0] == pytest.approx(2 * np.pi * 10, rel=0.06)
    assert cells["circularity"][0] > 0.9
    assert cells["solidity"][0] > 0.95
    assert cells["aspect_ratio"][0] == pytest.approx(1.0, abs=0.03)
    assert cells["endpoints"][0] <= 2
    assert cells["branch_length_um"][0] < 5


def test_ellipse_aspect_ratio_is_its_axis_ratio():
    labels = np.zeros((100, 100), np.int32)
    labels[ellipse(50, 50, 12, 36)] = 1
    cells = measure_cells(labels, pixel_size_um=1.0)
    assert cells["aspect_ratio"][0] == pytest.approx(3.0, rel=0.05)


def test_cross_has_four_endpoints_and_low_solidity():
    labels = np.zeros((101, 101), np.int32)
    labels[46:55, 10:91] = 1
    labels[10:91, 46:55] = 1
    cells = measure_cells(labels, pixel_size_um=1.0)
    assert cells["endpoints"][0] == 4
    assert cells["solidity"][0] < 0.5
    assert cells["branch_length_um"][0] == pytest.approx(160, rel=0.1)
    assert cells["circularity"][0] < 0.4


def test_measures_are_per_label_and_ordered_by_label():
    labels = np.zeros((100, 200), np.int32)
    labels[disk((50, 50), 10)] = 1
    labels[disk((50, 150), 20)] = 2
    cells = measure_cells(labels, pixel_size_um=1.0)
    assert list(cells["label"]) == [1, 2]
    assert cells["area_um2"][1] == pytest.approx(4 * cells["area_um2"][0], rel=0.05)
    assert cells["centroid_col_px"][1] == pytest.approx(150, abs=0.5)


def field_with_disks(centres_radii, shape=(200, 200), brightness=200.0):
    image = np.full(shape, 10.0)
    for (row, col), radius in centres_radii:
        image[disk((row, col), radius, shape=shape)] = brightness
    rng = np.random.default_rng(0)
    return (image + rng.normal(0, 2, shape)).clip(0, 255).astype(np.uint8)


def test_border_cells_are_excluded_only_when_asked():
    image = field_with_disks([((100, 100), 12), ((100, 3), 14)])
    with_border = score_field(image, 1.0, PARAMS, exclude_border=False)
    without_border = score_field(image, 1.0, PARAMS, exclude_border=True)
    assert with_border.cell_count == 2
    assert without_border.cell_count == 1
    assert without_border.cells["centroid_col_px"][0] == pytest.approx(100, abs=1)
    assert exclude_border_cells(with_border.labels).max() == 1


def test_debris_is_removed():
    image = field_with_disks([((100, 100), 12), ((40, 40), 1)])
    labels = segment(image, 1.0, PARAMS)
    assert labels.max() == 1
    assert labels[100, 100] == 1 and labels[40, 40] == 0


def test_touching_cells_are_split():
    # Two 20 µm cells whose edges touch: one blob after thresholding, two cells after the watershed.
    image = field_with_disks([((100, 90), 10), ((100, 110), 10)]).astype(np.float32)
    labels = segment(image, 1.0, PARAMS)
    assert ndi.label(labels > 0)[1] == 1
    assert labels.max() == 2
    assert labels[100, 88] != labels[100, 111]


def test_segment_accepts_8_bit_16_bit_and_float_images():
    image = field_with_disks([((100, 100), 12)])
    for converted in (image, image.astype(np.uint16) * 200, image.astype(np.float64) / 255):
        assert segment(converted, 1.0, PARAMS).max() == 1


def test_blank_field_scores_zero_cells():
    result = score_field(np.full((64, 64), 7, np.uint16), 1.0, PARAMS)
    assert result.cell_count == 0 and result.activation_fraction == 0.0
    assert np.isnan(result.median_area_um2)


def test_classification_follows_the_parameter_thresholds():
    cells = {"area_um2": np.array([100.0, 400.0, 180.0, 180.0]), "circularity": np.array([0.9, 0.9, 0.3, 0.9])}
    params = dataclasses.replace(PARAMS, activated_min_area_um2=300.0, shape_rule_min_area_um2=150.0,
                                 activated_max_circularity=0.5)
    assert list(classify_cells(cells, params)) == [False, True, True, False]
    stricter = dataclasses.replace(params, activated_min_area_um2=500.0, shape_rule_min_area_um2=200.0)
    assert list(classify_cells(cells, stricter)) == [False, False, False, False]


def test_result_records_versions_and_parameter_set():
    result = score_field(field_with_disks([((100, 100), 12)]), 1.0, PARAMS)
    assert result.algorithm_version == ALGORITHM_VERSION
    assert result.parameter_set_name == PARAMS.name and result.parameter_set_version == PARAMS.version
    assert set(result.library_versions) == {"numpy", "scipy", "scikit-image"}
    assert result.library_versions["numpy"] == np.__version__
    for column in analysis.CELL_TABLE_COLUMNS:
        assert len(result.cells[column]) == result.cell_count
    assert result.labels.shape == (200, 200)


def test_parameter_set_registry_and_round_trip():
    assert DEFAULT_PARAMETER_SET_NAME in PARAMETER_SETS
    with pytest.raises(KeyError, match="no-such-set"):
        get_parameter_set("no-such-set")
    stored = PARAMS.to_dict()
    assert ParameterSet.from_dict(stored) == PARAMS
    changed = ParameterSet.from_dict({**stored, "version": 2, "activated_min_area_um2": 250})
    assert changed.version == 2 and changed.activated_min_area_um2 == 250.0
    with pytest.raises(ValueError, match="bogus"):
        ParameterSet.from_dict({**stored, "bogus": 1})
    with pytest.raises(ValueError):
        ParameterSet.from_dict({**stored, "threshold_noise_sd": -1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        PARAMS.version = 3


def test_outline_overlay_colours_outlines_by_class():
    labels = np.zeros((60, 120), np.int32)
    labels[disk((30, 30), 10)] = 1
    labels[disk((30, 90), 10)] = 2
    image = (labels > 0).astype(np.uint16) * 1000
    rgb = outline_overlay(image, labels, np.array([True, False]))
    assert rgb.shape == (60, 120, 3) and rgb.dtype == np.uint8
    left, right = rgb[:, :60].reshape(-1, 3), rgb[:, 60:].reshape(-1, 3)
    assert (left == analysis.ACTIVATED_COLOUR).all(axis=1).any()
    assert not (left == analysis.RESTING_COLOUR).all(axis=1).any()
    assert (right == analysis.RESTING_COLOUR).all(axis=1).any()


def test_read_fields_single_and_multi_frame_tiff(tmp_path):
    single = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    tifffile.imwrite(tmp_path / "one.tif", single)
    [(frame, data)] = read_fields(tmp_path / "one.tif")
    assert frame is None and np.array_equal(data, single)
    stack = np.stack([single, single + 1, single + 2])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    fields = read_fields(tmp_path / "stack.tif")
    assert [frame for frame, _ in fields] == [0, 1, 2]
    assert np.array_equal(fields[2][1], single + 2)


def test_read_fields_multichannel_needs_a_channel(tmp_path):
    data = np.zeros((2, 32, 32), np.uint8)
    data[1] = 9
    tifffile.imwrite(tmp_path / "channels.tif", data, imagej=True, metadata={"axes": "CYX"})
    with pytest.raises(UnreadableImage, match="channel"):
        read_fields(tmp_path / "channels.tif")
    [(frame, plane)] = read_fields(tmp_path / "channels.tif", channel=1)
    assert frame is None and (plane == 9).all()


def test_read_fields_png_and_bytes(tmp_path):
    data = (np.arange(32 * 32) % 256).astype(np.uint8).reshape(32, 32)
    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="PNG")
    [(frame, plane)] = read_fields(buffer.getvalue())
    assert frame is None and np.array_equal(plane, data)
    rgb = io.BytesIO()
    Image.fromarray(np.stack([data] * 3, axis=2)).save(rgb, format="PNG")
    with pytest.raises(UnreadableImage, match="channel"):
        read_fields(rgb.getvalue())
    assert read_fields(rgb.getvalue(), channel=0)[0][1].shape == (32, 32)


@pytest.mark.parametrize("content, message", [
    (b"II*\x00" + b"\x00" * 40, "corrupt"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt"),
    (b"just some text", "not a TIFF or PNG"),
])
def test_read_fields_refuses_corrupt_or_unsupported_files(tmp_path, content, message):
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match=message):
        read_fields(path)


def test_read_fields_refuses_images_over_the_pixel_limit(tmp_path):
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((100, 100), np.uint8))
    with pytest.raises(UnreadableImage, match="limit"):
        read_fields(tmp_path / "big.tif", max_pixels=5000)
    assert read_fields(tmp_path / "big.tif", max_pixels=10000)[0][1].shape == (100, 100)


def test_read_fields_reports_a_missing_file(tmp_path):
    with pytest.raises(UnreadableImage, match="cannot be read"):
        read_fields(tmp_path / "absent.tif")
