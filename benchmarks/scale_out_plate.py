"""Score synthetic 96-field potency plates through the Huey job queue and time them (used by
benchmarks/scale_out.sh; the Huey workers must be running against the same LABSYS_HUEY_URL,
database and instance folder).

    python benchmarks/scale_out_plate.py --plates 1 [--size 1024]
Prints one line per plate: fields, seconds from enqueue to scored, and the wall time of all.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labsys import create_app  # noqa: E402
from labsys.timefmt import lab_today  # noqa: E402

# 12 wells × 8 fields = 96 fields: unstimulated, LPS, test lot and reference lot, 3 wells each.
LAYOUT = [("A", 1, "unstimulated", None, None, 0.15), ("A", 4, "lps", None, None, 0.70),
          ("B", 1, "test", "W000025000001", "1:10", 0.40), ("C", 1, "reference", "MSC-REF-2026-01", "1:10", 0.40)]
FIELDS_PER_WELL = 8


def make_plate(size: int, seed: int):
    from labsys.auth.services import find_user
    from labsys.potency import services
    from labsys.potency.demo import tiff_bytes
    from labsys.potency.states import WellCondition
    from labsys.potency.synthetic import synthetic_field

    technician = find_user("technician")
    run = services.create_run(
        technician, assay_date=lab_today(), bv2_passage=12, lps_lot=f"LPS-SCALE-{seed}", lps_ng_per_ml=100,
        test_lots=["W000025000001"], reference_lot="MSC-REF-2026-01", plate_format=96, min_cells_per_field=30,
        notes="scale-out benchmark (synthetic fields)")
    assignments, files = {}, []
    for row, first, condition, lot, ratio, fraction in LAYOUT:
        for col in range(first, first + 3):
            well = f"{row}{col:02d}"
            assignments[well] = services.WellAssignment(WellCondition(condition), lot, ratio)
            for number in range(1, FIELDS_PER_WELL + 1):
                field = synthetic_field((size, size), cell_count=max(60, size * size // 4200),
                                        activation_fraction=fraction, seed=seed * 1000 + col * 10 + number + ord(row))
                files.append((f"{well}_f{number}.tif", tiff_bytes(field.image)))
    services.save_layout(technician, run, assignments)
    services.upload_images(technician, run, files)
    return run.id, len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plates", type=int, default=1)
    parser.add_argument("--size", type=int, default=1024, help="field edge in pixels")
    parser.add_argument("--timeout", type=int, default=1200)
    args = parser.parse_args()
    app = create_app()
    with app.app_context(), app.test_request_context():
        from labsys.auth.services import find_user
        from labsys.extensions import db
        from labsys.potency import services
        from labsys.potency.jobs import enqueue_scoring
        from labsys.potency.states import RunState

        seed = int(time.time()) % 100000
        plates = [make_plate(args.size, seed + i) for i in range(args.plates)]
        technician = find_user("technician")
        started = {}
        for run_id, _ in plates:
            services.start_scoring(technician, services.get_run(run_id))
            enqueue_scoring(run_id)
            started[run_id] = time.perf_counter()
        first = min(started.values())
        done: dict[int, float] = {}
        while len(done) < len(plates) and time.perf_counter() - first < args.timeout:
            time.sleep(0.5)
            db.session.rollback()
            for run_id, fields in plates:
                run = services.get_run(run_id)
                if run_id not in done and run.state != RunState.SCORING:
                    done[run_id] = time.perf_counter() - started[run_id]
                    print(f"plate run {run_id}: {fields} fields scored ({run.fields_done} done, "
                          f"{run.fields_failed} failed) in {done[run_id]:.1f} s", flush=True)
        if len(done) < len(plates):
            raise SystemExit("timed out waiting for the scoring jobs")
        total = time.perf_counter() - first
        fields = sum(f for _, f in plates)
        print(f"all {len(plates)} plate(s): {fields} fields in {total:.1f} s ({fields / total:.2f} fields/s)")


if __name__ == "__main__":
    main()
