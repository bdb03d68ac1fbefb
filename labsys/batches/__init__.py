"""Batches: donor cord to vial — donors, cords, processing steps, passages, reagents,
deviations, fill, vials, storage, labels and the batch record.

What later features (release, chain of custody) read and call:

- ``services.open_deviations(batch)``: open deviations on the batch or its cord (block release).
- ``services.unverified_entries(batch)``: passages and fill awaiting second-person verification.
- ``batch.max_passage_number``, ``batch.status``, ``batch.fill``, ``batch.donor.eligibility``
  (signed by QA) and ``services.donor_decision(donor)`` (what the markers say now, with reasons).
- ``services.find_batch(identifier)``, ``vials.vials_of(batch, status=None)``,
  ``vials.find_vial(identifier)``, ``vials.custody_events(vial)``.
- Inside the caller's own ``unit_of_work``: ``services.apply_batch_transition(batch, new)``,
  ``vials.apply_vial_transition(actor, vial, new, note)``, ``vials.record_custody_event(actor,
  vial, event_type, from_location, to_location, note)``. Stand-alone services:
  ``services.transition_batch(user, batch, new, reason)``, ``vials.transition_vial(user, vial,
  new, reason)``. The transition tables are in ``states``.
- Labels: ``labels.vial_label_sheet_pdf(batch)``, ``labels.describe_payload(payload)``; the
  signed-payload codec itself is ``labsys.documents.codec``."""
from __future__ import annotations

import os

from flask import Flask

from labsys.i18n import lazy_gettext as _l

DEFAULTS = {
    # Cord receipt: hours from collection and transport temperature range (°C).
    "CORD_MAX_HOURS_TO_RECEIPT": 24,
    "CORD_TRANSPORT_MIN_C": 2.0,
    "CORD_TRANSPORT_MAX_C": 8.0,
    # Donor specimen within ± days of cord collection (21 CFR 1271.80(b)).
    "DONOR_SPECIMEN_WINDOW_DAYS": 7,
    # Highest passage number allowed (P0 is the primary culture).
    "MAX_PASSAGE": 5,
    # Shelf life of a filled vial in the vapour phase of liquid nitrogen.
    "VIAL_SHELF_LIFE_DAYS": 365,
}
_CASTS = {"CORD_TRANSPORT_MIN_C": float, "CORD_TRANSPORT_MAX_C": float}


def init_app(app: Flask) -> None:
    from labsys.auth.roles import Role
    from labsys.batches import cli, donor_views, quality_views, storage_views, views  # noqa: F401 (routes)
    from labsys.batches.demo import load_demo_data
    from labsys.navigation import add_demo_loader, add_nav, add_panel

    for name, default in DEFAULTS.items():
        value = os.environ.get(f"LABSYS_{name}")
        app.config.setdefault(name, _CASTS.get(name, int)(value) if value is not None else default)
    app.register_blueprint(views.bp)
    roles = [Role.TECHNICIAN, Role.QA]
    add_nav(app, _l("Batches"), "batches.index", roles, order=200)
    add_nav(app, _l("Vials"), "batches.vials", [Role.TECHNICIAN, Role.QA, Role.PHARMACIST], order=210)
    add_panel(app, "batches/_panel.html", roles, views.panel_context, order=200)
    add_demo_loader(app, load_demo_data, order=200)
    from labsys.navigation import add_route_examples

    add_route_examples(app, route_examples)
    app.cli.add_command(cli.labels_cli)


def route_examples() -> dict[str, list]:
    """Real values for the batches pages' URL arguments (route walks), from the database."""
    from sqlalchemy import select

    from labsys.batches.models import Batch, Box, Cord, Deviation, Donor, Fill, Passage, Vial
    from labsys.extensions import db

    def first_ids(model, n: int = 2) -> list[int]:
        return list(db.session.scalars(select(model.id).order_by(model.id).limit(n)))

    return {"batch_id": first_ids(Batch, 3), "donor_id": first_ids(Donor, 3), "cord_id": first_ids(Cord),
            "passage_id": first_ids(Passage), "fill_id": first_ids(Fill), "deviation_id": first_ids(Deviation),
            "vial_id": first_ids(Vial), "box_id": first_ids(Box)}
