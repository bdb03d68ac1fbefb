"""Potency app test helpers (imported by the app-side test modules; the autouse fixture
must be imported into each module): images kept under the test's tmp dir, jobs run inline (Huey
immediate mode), small synthetic fields."""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools

import numpy as np
import pytest

from labsys.potency.demo import tiff_bytes


_SCORED: dict = {}


def memoised_score(image_id, path, filename, pixel_size_um, params, channel, max_pixels):
    """The real field scoring, memoised on the file's content and the settings: the analysis is
    deterministic, and many tests score the same synthetic plate (this keeps the suite fast)."""
    import hashlib
    import json
    from pathlib import Path

    from labsys.potency.scoring import score_stored_field

    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return score_stored_field(image_id, path, filename, pixel_size_um, params, channel, max_pixels)
    key = (digest, pixel_size_um, json.dumps(params, sort_keys=True), channel, max_pixels)
    if key not in _SCORED:
        _SCORED[key] = score_stored_field(image_id, path, filename, pixel_size_um, params, channel, max_pixels)
    outcome = dataclasses.replace(_SCORED[key], image_id=image_id)
    return outcome


@pytest.fixture(autouse=True)
def potency_config(request, tmp_path, monkeypatch):
    if "app" in request.fixturenames:
        from labsys.potency import jobs

        monkeypatch.setattr(jobs, "score_stored_field", memoised_score)
        app = request.getfixturevalue("app")
        app.config.update(POTENCY_IMAGE_DIR=str(tmp_path / "images"), POTENCY_HUEY_IMMEDIATE=True,
                          POTENCY_SCORING_PROCESSES=1, POTENCY_HUEY_FILE=str(tmp_path / "huey.db"))
        app.extensions.pop("potency_huey", None)


@functools.lru_cache(maxsize=64)
def field_tiff(fraction: float, seed: int, size: int = 512, cells: int = 90) -> bytes:
    from labsys.potency.synthetic import synthetic_field

    return tiff_bytes(synthetic_field(shape=(size, size), cell_count=cells, activation_fraction=fraction,
                                      seed=seed).image)


def plain_tiff(shape=(64, 64), dtype=np.uint16, value=100) -> bytes:
    return tiff_bytes(np.full(shape, value, dtype=dtype))


RUN_DEFAULTS = dict(assay_date=dt.date(2026, 11, 24), bv2_passage=8, lps_lot="LPS-T1", lps_ng_per_ml=100,
                    test_lots="LOT-A, LOT-B", reference_lot="LOT-REF", plate_format=24, min_cells_per_field=20,
                    reference_min_inhibition=20, reference_max_inhibition=90)

# Well → (condition, lot, ratio, activation fraction)
SMALL_LAYOUT = {
    "A01": ("unstimulated", None, None, 0.15), "A02": ("unstimulated", None, None, 0.15),
    "A03": ("lps", None, None, 0.70), "A04": ("lps", None, None, 0.70),
    "B01": ("test", "LOT-A", "1:10", 0.35), "B02": ("test", "LOT-A", "1:10", 0.35),
    "B03": ("test", "LOT-B", "1:10", 0.50), "B04": ("test", "LOT-B", "1:10", 0.50),
    "C01": ("reference", "LOT-REF", "1:10", 0.40), "C02": ("reference", "LOT-REF", "1:10", 0.40),
}


def make_run(user, layout=SMALL_LAYOUT, **overrides):
    from labsys.potency import services
    from labsys.potency.states import WellCondition

    run = services.create_run(user, **{**RUN_DEFAULTS, **overrides})
    services.save_layout(user, run, {well: services.WellAssignment(WellCondition(c), lot, ratio)
                                     for well, (c, lot, ratio, _f) in layout.items()})
    return run


def layout_files(layout=SMALL_LAYOUT, fields=1, seed=100):
    files = []
    for index, (well, (_c, _lot, _ratio, fraction)) in enumerate(sorted(layout.items())):
        for number in range(1, fields + 1):
            files.append((f"{well}_f{number}.tif", field_tiff(fraction, seed + 7 * index + number)))
    return files
