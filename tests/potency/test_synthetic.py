"""The default BV2 parameter set recovers the activation fraction of synthetic fields."""

import numpy as np
import pytest

from labsys.potency.analysis import score_field
from labsys.potency.parameters import DEFAULT_PARAMETER_SET_NAME, get_parameter_set
from labsys.potency.synthetic import synthetic_field

FRACTIONS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_activation_fraction_is_recovered_within_five_points(fraction):
    field = synthetic_field((1024, 1024), cell_count=250, activation_fraction=fraction, seed=int(fraction * 100) + 7)
    result = score_field(field.image, field.pixel_size_um, get_parameter_set(DEFAULT_PARAMETER_SET_NAME))
    truth = field.interior_activation_fraction()
    print(f"fraction {fraction}: true {truth:.3f} measured {result.activation_fraction:.3f} "
          f"error {result.activation_fraction - truth:+.3f}; cells true {field.interior_cell_count()} "
          f"found {result.cell_count}")
    assert abs(result.activation_fraction - truth) <= 0.05
    assert abs(result.cell_count - field.interior_cell_count()) <= 0.1 * field.interior_cell_count()


def test_synthetic_fields_are_reproducible_from_the_seed():
    first = synthetic_field((256, 256), cell_count=20, seed=5)
    second = synthetic_field((256, 256), cell_count=20, seed=5)
    other = synthetic_field((256, 256), cell_count=20, seed=6)
    assert np.array_equal(first.image, second.image)
    assert np.array_equal(first.labels, second.labels)
    assert not np.array_equal(first.image, other.image)


def test_synthetic_truth_matches_the_requested_fraction_and_sizes():
    field = synthetic_field((1024, 1024), cell_count=200, activation_fraction=0.4, seed=1)
    assert field.image.dtype == np.uint16
    assert field.activated.size == len(np.unique(field.labels)) - 1
    assert abs(field.true_activation_fraction - 0.4) < 0.05
    area_um2 = np.bincount(field.labels.ravel())[1:] * field.pixel_size_um**2
    resting_diameter_um = 2 * np.sqrt(np.median(area_um2[~field.activated]) / np.pi)
    assert 10 <= resting_diameter_um <= 15
    assert np.median(area_um2[field.activated]) > 2 * np.median(area_um2[~field.activated])
