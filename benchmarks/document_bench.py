"""Document benchmark: labsys's PDFs against WeasyPrint alone on the same HTML.

    .venv/bin/python benchmarks/document_bench.py [--repeats 5] [--labels 500] [--vials 10]
                                                  [--out DIR] [--profile NAME]

Builds a temporary SQLite database with the demo data (every feature's demo loader), then, through
the services (the builders the tests use): a released lot dispensed to a 90 kg patient as 10 vials
(shipped, received, thawed, dispensed with a witness, administered), and a 500-vial lot. Times

- the chain-of-custody certificate of that dispensing (10 vials with their timelines),
- the certificate of analysis of the released lot,
- the 500-vial label sheet,

each through labsys's full path (database queries with an empty session, signed QR payloads,
QR codes, Jinja HTML, WeasyPrint PDF), and WeasyPrint alone on the HTML labsys produced (captured
once, its stylesheets inlined): ``weasyprint.HTML(string=html, base_url=...).write_pdf()``.
The two take turns in every repeat so both see the same machine load; the table gives the
medians and their ratio (labsys overhead), in wall-clock seconds and in this process's CPU seconds
(everything here runs in one thread, so on a quiet machine the two agree; on a shared, loaded one
the CPU figures say what the wall-clock ones would be without the other jobs). ``--out`` keeps the PDFs (to compare looks with
pdftoppm); ``--profile certificate|coa|labels`` prints a cProfile of one full-path run."""
from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402

from labsys import create_app  # noqa: E402
from labsys.config import TestConfig  # noqa: E402
from labsys.extensions import db  # noqa: E402
from labsys.timefmt import lab_today  # noqa: E402

GOALS = {"certificate": 0.5, "coa": 0.5, "labels": 5.0}
OVERHEAD_GOAL = 1.3
TITLES = {"certificate": "chain-of-custody certificate", "coa": "certificate of analysis",
          "labels": "vial label sheet"}


def build_app(path: Path) -> Flask:
    config = {k: getattr(TestConfig, k) for k in dir(TestConfig) if k.isupper()}
    config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}", DEMO_PASSWORD="demo-password-for-bench")
    return create_app(config)


def build_data(app: Flask, vials: int, labels: int) -> dict:
    """Demo data, a released lot dispensed to one patient as ``vials`` vials, a ``labels``-vial lot."""
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.signatures import SignatureCheck
    from labsys.chain_of_custody import services, shipping
    from labsys.cli import ensure_demo_users
    from labsys.navigation import demo_loaders
    from labsys.release import decisions
    from labsys.release.selection import select_for_trial
    from labsys.trial import orders as trial_orders
    from labsys.trial import rules as trial_rules
    from labsys.trial import services as trial_services
    from labsys.trial.models import Trial
    from tests.release.conftest import LotBuilder, enter_results
    from tests.trial.conftest import screening_values

    ensure_demo_users()
    for loader in demo_loaders(app):
        loader()
    from labsys.auth.services import find_user
    from labsys.cli import DEMO_USERS

    users = {username: find_user(username) for username, _, _ in DEMO_USERS}
    trial = trial_services.require_trial()
    weight = Decimal("90.0")
    # Dose per kg so that the proposal is exactly `vials` vials of 10e6 viable cells.
    dose = int(Decimal(10_000_000 * vials - 5_000_000) / weight)
    trial_services.save_trial(users["pharmacist"], {**_trial_values(trial), "dose_cells_per_kg": dose,
                                                   "max_dose_cells": 10_000_000 * (vials + 2)}, trial)
    runs: dict[str, dict] = {}
    previous = app.extensions.get("labsys_release_potency")
    app.extensions["labsys_release_potency"] = lambda lot: runs.get(lot) or (previous(lot) if previous else None)
    builder = LotBuilder(users)
    lot = builder.lot(vial_count=vials + 2)
    enter_results(users, lot)
    runs[lot.identifier] = {"percent_inhibition": Decimal("37.5"), "run_valid": True,
                            "run_reference": f"PR-{lot.identifier[-4:]}"}
    decision = decisions.decide_lot(users["qa"], lot, True, SignatureCheck(users["qa"], SignatureMeaning.RELEASED, "QP"),
                                    "meets specification", None)
    select_for_trial(users["qa"], lot, SignatureCheck(users["qa"], SignatureMeaning.APPROVED, "select"))
    n = 0
    while True:
        n += 1
        patient = trial_services.enrol_patient(users["investigator"], db.session.get(Trial, trial.id),
                                               screening_values(trial, f"SCR-B{n:03d}", weight_kg=weight))
        if trial_services.randomize_patient(users["pharmacist"], patient) == trial_rules.ARM_MSC:
            break
    order = trial_orders.order_infusion(users["investigator"], patient, lab_today())
    proposal = services.propose_vials(order)
    chosen = [v for v in proposal.vials if v.batch_id == lot.id]
    assert len(proposal.vials) == vials and len(chosen) == vials, (len(proposal.vials), len(chosen))
    ids = [v.identifier for v in chosen]
    services.allocate(users["pharmacist"], order, ids)
    shipment = shipping.ship(users["technician"], ids, "Hospital cold-chain courier (dry shipper DS-3)",
                             "Pharmacy, clean room 2", Decimal("-196"), Decimal("-150"))
    from labsys.db import utcnow

    start = utcnow() - dt.timedelta(minutes=50)
    shipping.record_readings(users["technician"], shipment, [
        (start + dt.timedelta(minutes=10 * i), Decimal(f"-18{5 + i % 4}.5")) for i in range(5)])
    shipping.receive(users["pharmacist"], shipment, [services.vial_payload(v) for v in chosen])
    for vial in chosen:
        services.thaw(users["pharmacist"], vial, Decimal("37.0"), "water bath WB-02")
    dispensing = services.dispense(
        users["pharmacist"], SignatureCheck(users["pharmacist"], SignatureMeaning.DISPENSED, "bench"),
        SignatureCheck(users["pharmacist2"], SignatureMeaning.WITNESSED, "bench"),
        services.patient_payload(patient), [services.vial_payload(v) for v in chosen])
    now = utcnow().replace(second=0, microsecond=0)
    services.administer(users["investigator"], dispensing,
                        SignatureCheck(users["investigator"], SignatureMeaning.ADMINISTERED, "bench"),
                        services.patient_payload(patient), [services.vial_payload(v) for v in chosen], now, now)
    big = builder.lot(vial_count=labels, passages=4)
    return {"dispensing_id": dispensing.id, "coa_batch_id": lot.id, "decision_id": decision.id,
            "labels_batch_id": big.id, "viewer_id": users["investigator"].id}


def _trial_values(trial) -> dict:
    from labsys.trial.services import TRIAL_FIELDS

    return {name: getattr(trial, name) for name in TRIAL_FIELDS}


def producers(ids: dict) -> dict:
    """name -> a function that makes the PDF from the database, as the app's routes do."""
    from labsys.auth.models import User
    from labsys.batches.labels import vial_label_sheet_pdf
    from labsys.batches.models import Batch
    from labsys.chain_of_custody.documents import certificate_pdf as custody_certificate_pdf
    from labsys.chain_of_custody.models import Dispensing
    from labsys.release.certificate import certificate_pdf as analysis_certificate_pdf
    from labsys.release.models import ReleaseDecision

    return {
        "certificate": lambda: custody_certificate_pdf(db.session.get(Dispensing, ids["dispensing_id"]),
                                                       db.session.get(User, ids["viewer_id"])),
        "coa": lambda: analysis_certificate_pdf(db.session.get(Batch, ids["coa_batch_id"]),
                                                db.session.get(ReleaseDecision, ids["decision_id"])),
        "labels": lambda: vial_label_sheet_pdf(db.session.get(Batch, ids["labels_batch_id"])),
    }


def capture_html(app: Flask, produce) -> tuple[str, str, bytes]:
    """Run the full path once, keeping the HTML and stylesheet labsys handed to WeasyPrint."""
    from labsys.documents import pdf as pdf_module

    seen: dict = {}
    original = pdf_module.html_to_pdf

    def spy(html: str, base_url: str | None = None, extra_css: str = "") -> bytes:
        seen.update(html=html, css=pdf_module.BASE_CSS + extra_css)
        return original(html, base_url=base_url, extra_css=extra_css)

    pdf_module.html_to_pdf = spy
    try:
        with app.test_request_context():
            pdf = produce()
    finally:
        pdf_module.html_to_pdf = original
    return seen["html"], seen["css"], pdf


def static_html(html: str, css: str) -> str:
    """The captured HTML with labsys's stylesheet inlined first (the same content, one document).

    labsys passes its base stylesheet as a WeasyPrint *user* stylesheet, which the template's own
    rules override; placed before the template's <style>, it loses to them the same way."""
    tag = f"<style>{css}</style>"
    for marker in ("<style", "</head>"):
        if marker in html:
            at = html.index(marker)
            return html[:at] + tag + html[at:]
    return tag + html


def full_path(app: Flask, produce) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of one full-path run."""
    db.session.remove()  # the queries run again: nothing cached in the identity map
    with app.test_request_context():
        t0, c0 = time.perf_counter(), time.process_time()
        produce()
        return time.perf_counter() - t0, time.process_time() - c0


def weasyprint_alone(html: str) -> tuple[float, float]:
    from weasyprint import HTML

    t0, c0 = time.perf_counter(), time.process_time()
    HTML(string=html, base_url=str(ROOT)).write_pdf()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vials", type=int, default=10)
    parser.add_argument("--labels", type=int, default=500)
    parser.add_argument("--out", type=Path, help="write each document's PDF (and static PDF) here")
    parser.add_argument("--profile", choices=sorted(GOALS), help="print a cProfile of one full-path run")
    parser.add_argument("--only", choices=sorted(GOALS), action="append", help="time only these documents")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="labsys-doc-bench-"))
    app = build_app(scratch / "bench.db")
    with app.app_context():
        db.create_all()
        t0 = time.perf_counter()
        with app.test_request_context():
            ids = build_data(app, args.vials, args.labels)
        print(f"built demo data, a {args.vials}-vial dispensing and a {args.labels}-vial lot "
              f"in {time.perf_counter() - t0:.1f} s (SQLite, {scratch})")
        makers = producers(ids)
        names = args.only or list(makers)
        if args.profile:
            capture_html(app, makers[args.profile])  # warm imports and fonts
            profiler = cProfile.Profile()
            db.session.remove()
            with app.test_request_context():
                profiler.enable()
                makers[args.profile]()
                profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return
        rows = []
        for name in names:
            html, css, pdf = capture_html(app, makers[name])  # also the warm-up run
            document = static_html(html, css)
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / f"{name}.pdf").write_bytes(pdf)
                (args.out / f"{name}.html").write_text(document, encoding="utf-8")
            weasyprint_alone(document)
            ours, alone = [], []
            for _ in range(args.repeats):
                ours.append(full_path(app, makers[name]))
                alone.append(weasyprint_alone(document))
            rows.append((name, statistics.median(t for t, _ in ours), statistics.median(t for t, _ in alone),
                         statistics.median(c for _, c in ours), statistics.median(c for _, c in alone)))
            print(f"  {name}: labsys {[round(t, 3) for t, _ in ours]} (CPU {[round(c, 3) for _, c in ours]})  "
                  f"weasyprint {[round(t, 3) for t, _ in alone]} (CPU {[round(c, 3) for _, c in alone]})", flush=True)
    load = os.getloadavg()[0]
    print(f"\n{os.cpu_count()} cores, load average {load:.1f}, {dt.date.today()}, {args.repeats} repeats, "
          f"{args.vials} custody vials, {args.labels} labels")
    print("| document | labsys median, s | goal | WeasyPrint alone, s | overhead | goal | CPU: labsys, s | CPU: alone, s | CPU overhead |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, ours, alone, ours_cpu, alone_cpu in rows:
        ratio = ours / alone
        time_verdict = "met" if ours <= GOALS[name] else "MISSED"
        verdict = "met" if ratio <= OVERHEAD_GOAL else "MISSED"
        print(f"| {TITLES[name]} | {ours:.3f} | ≤ {GOALS[name]:g} ({time_verdict}) | {alone:.3f} | {ratio:.2f}× "
              f"| ≤ {OVERHEAD_GOAL}× ({verdict}) "
              f"| {ours_cpu:.3f} | {alone_cpu:.3f} | {ours_cpu / alone_cpu:.2f}× |")


if __name__ == "__main__":
    main()
