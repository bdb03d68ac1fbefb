"""The `potency score` command: JSON output, label files and exit codes."""

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from labsys.potency.cli import potency_cli
from labsys.potency.synthetic import synthetic_field

KEYS = {"file", "frame", "cell_count", "activated_count", "activation_fraction", "median_area_um2",
        "algorithm_version", "params"}


@pytest.fixture
def field_files(tmp_path):
    single = synthetic_field((384, 384), cell_count=30, activation_fraction=0.5, seed=2)
    tifffile.imwrite(tmp_path / "well-A1.tif", single.image)
    frames = [synthetic_field((256, 256), cell_count=12, activation_fraction=0.5, seed=s).image for s in (3, 4)]
    tifffile.imwrite(tmp_path / "well-B2.tif", np.stack(frames), photometric="minisblack")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00not really a tiff")
    return tmp_path, single


def run(*args):
    return CliRunner().invoke(potency_cli, ["score", *map(str, args)])


def test_score_prints_one_json_object_per_field(field_files):
    folder, single = field_files
    result = run(folder / "well-A1.tif", folder / "well-B2.tif", "--pixel-size-um", 0.65, "--json")
    assert result.exit_code == 0, result.output
    fields = json.loads(result.stdout)
    assert [(f["file"].endswith("well-A1.tif"), f["frame"]) for f in fields] == [(True, None), (False, 0), (False, 1)]
    for field in fields:
        assert set(field) == KEYS
        assert field["params"] == {"name": "bv2-default-v1", "version": 1}
        assert 0 <= field["activation_fraction"] <= 1
        assert field["activated_count"] <= field["cell_count"]
    assert fields[0]["cell_count"] > 0


def test_labels_are_written_as_16_bit_tiffs_named_by_file_and_frame(field_files, tmp_path):
    folder, _ = field_files
    out = tmp_path / "labels"
    result = run(folder / "well-A1.tif", folder / "well-B2.tif", "--pixel-size-um", 0.65, "--labels-out", out, "--json")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["well-A1-labels.tif", "well-B2-f0-labels.tif", "well-B2-f1-labels.tif"]
    labels = tifffile.imread(out / "well-A1-labels.tif")
    assert labels.dtype == np.uint16 and labels.shape == (384, 384)
    fields = json.loads(result.stdout)
    assert len(np.unique(labels)) - 1 == fields[0]["cell_count"]


def test_unreadable_file_exits_2_and_the_others_are_still_scored(field_files):
    folder, _ = field_files
    result = run(folder / "broken.tif", folder / "well-A1.tif", "--pixel-size-um", 0.65, "--json")
    assert result.exit_code == 2
    assert "broken.tif" in result.stderr
    fields = json.loads(result.stdout)
    assert len(fields) == 1 and fields[0]["file"].endswith("well-A1.tif")


def test_unknown_parameter_set_exits_2_with_a_clear_message(field_files):
    folder, _ = field_files
    result = run(folder / "well-A1.tif", "--pixel-size-um", 0.65, "--params", "no-such-set", "--json")
    assert result.exit_code == 2
    assert "no-such-set" in result.stderr and "bv2-default-v1" in result.stderr
