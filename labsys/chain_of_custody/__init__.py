"""Chain of custody: custody events, allocation, thaw, scan-to-dispense with a witness, the
JSON scanning API, wristbands and the chain-of-custody certificate."""
from __future__ import annotations

import os

from flask import Flask


def init_app(app: Flask) -> None:
    from labsys.i18n import lazy_gettext as _l

    from labsys.auth.roles import Role
    from labsys.chain_of_custody import models  # noqa: F401  (adds the custody columns to vial_events)
    from labsys.chain_of_custody import api, views
    from labsys.chain_of_custody.demo import load_demo_data
    from labsys.navigation import add_demo_loader, add_nav

    value = os.environ.get("LABSYS_THAW_HOLD_MINUTES")
    app.config.setdefault("THAW_HOLD_MINUTES", int(value) if value else 60)
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(views.bedside)
    add_nav(app, _l("Pharmacy"), "custody.pharmacy", [Role.PHARMACIST], order=600)
    add_nav(app, _l("Bedside"), "bedside.index", [Role.INVESTIGATOR], order=610)
    add_nav(app, _l("Accountability"), "custody.accountability", [Role.PHARMACIST, Role.QA], order=620)
    add_nav(app, _l("Shipments"), "custody.shipments", [Role.PHARMACIST, Role.TECHNICIAN], order=630)
    add_demo_loader(app, load_demo_data, order=900)
    from labsys.navigation import add_route_examples
    from labsys.release.hooks import register_patient_lookup

    add_route_examples(app, route_examples)
    from labsys.chain_of_custody.services import patients_of_vials

    register_patient_lookup(app, patients_of_vials)  # the recall page names who received each vial


def route_examples() -> dict[str, list]:
    """Real values for the custody pages' URL arguments (route walks), from the database."""
    from sqlalchemy import select

    from labsys.chain_of_custody.models import Dispensing, Shipment
    from labsys.extensions import db

    def first_ids(model, n: int = 2) -> list[int]:
        return list(db.session.scalars(select(model.id).order_by(model.id).limit(n)))

    return {"dispensing_id": first_ids(Dispensing), "shipment_id": first_ids(Shipment), "fmt": ["csv", "pdf"]}
