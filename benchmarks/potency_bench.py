"""Time the production potency pipeline against a plain reference pipeline on one synthetic
2048×2048 16-bit BV2 field with about 1,000 cells, and the plate throughput on 2 cores.

Run from the repository root: python benchmarks/potency_bench.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from skimage import filters, measure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labsys.potency.analysis import score_field  # noqa: E402
from labsys.potency.parameters import DEFAULT_PARAMETER_SET_NAME, get_parameter_set  # noqa: E402
from labsys.potency.synthetic import synthetic_field  # noqa: E402

PARAMS = get_parameter_set(DEFAULT_PARAMETER_SET_NAME)


def reference_pipeline(image: np.ndarray) -> dict:
    """Gaussian + Otsu + label + regionprops_table(area, perimeter, solidity, eccentricity)."""
    smoothed = filters.gaussian(image.astype(np.float32), sigma=2, preserve_range=True)
    labels = measure.label(smoothed > filters.threshold_otsu(smoothed))
    return measure.regionprops_table(labels, properties=("label", "area", "perimeter", "solidity", "eccentricity"))


def production_pipeline(image: np.ndarray, pixel_size_um: float):
    return score_field(image, pixel_size_um, PARAMS, exclude_border=True)


def interleaved_medians(functions: dict, repeats: int) -> dict:
    """Median wall-clock and CPU seconds per function, the functions taking turns in every
    repeat so that both see the same machine load."""
    wall = {name: [] for name in functions}
    cpu = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            function()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in functions}


_FIELD = None


def _score_one(index: int) -> int:
    return production_pipeline(_FIELD.image, _FIELD.pixel_size_um).cell_count


def _init(field) -> None:
    global _FIELD
    _FIELD = field


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--plate-fields", type=int, default=96)
    args = parser.parse_args()

    field = synthetic_field((2048, 2048), cell_count=1000, activation_fraction=0.3, seed=1)
    print(f"field 2048x2048 uint16, {field.activated.size} cells, pixel size {field.pixel_size_um} um")
    production_pipeline(field.image, field.pixel_size_um)  # warm-up
    reference_pipeline(field.image)
    medians = interleaved_medians(
        {
            "production": lambda: production_pipeline(field.image, field.pixel_size_um),
            "reference": lambda: reference_pipeline(field.image),
        },
        args.repeats,
    )
    (production, production_cpu), (reference, reference_cpu) = medians["production"], medians["reference"]
    print(f"production median: {production:.3f} s/field wall, {production_cpu:.3f} s CPU ({args.repeats} repeats)")
    print(f"reference median:  {reference:.3f} s/field wall, {reference_cpu:.3f} s CPU ({args.repeats} repeats)")
    print(f"speed-up (reference / production): {reference / production:.2f}x wall, "
          f"{reference_cpu / production_cpu:.2f}x CPU")

    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2, initializer=_init, initargs=(field,)) as pool:
        list(pool.map(_score_one, range(args.plate_fields)))
    elapsed = time.perf_counter() - start
    print(f"plate of {args.plate_fields} fields on 2 processes: {elapsed:.1f} s, "
          f"{args.plate_fields / elapsed:.2f} fields/s; a 96-field plate: {96 * elapsed / args.plate_fields:.0f} s")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
