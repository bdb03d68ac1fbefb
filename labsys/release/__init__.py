"""Release: specifications, QC results, release rules, the QA decision, late results and recalls,
the certificate of analysis, the QA work queue and the selection of lots for the trial."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from labsys.i18n import lazy_gettext as _l

    from labsys.auth.roles import Role
    from labsys.navigation import add_demo_loader, add_nav, add_panel
    from labsys.release import views
    from labsys.release.demo import load_demo_data

    app.config.setdefault("RELEASE_SPECIFICATION_CODE", "HUC-MSC-RELEASE")
    app.register_blueprint(views.bp)
    add_nav(app, _l("QA release"), "release.queue", [Role.QA], order=400)
    add_nav(app, _l("QC results"), "release.results_index", [Role.TECHNICIAN], order=410)
    add_nav(app, _l("Specifications"), "release.specifications", [Role.QA, Role.TECHNICIAN], order=420)
    add_panel(app, "release/_panel.html", [Role.QA, Role.TECHNICIAN], views.panel_context, order=400)
    add_demo_loader(app, load_demo_data, order=400)
    from labsys.navigation import add_route_examples

    add_route_examples(app, route_examples)


def route_examples() -> dict[str, list]:
    """Real values for the release pages' URL arguments (route walks), from the database."""
    from sqlalchemy import select

    from labsys.extensions import db
    from labsys.release.models import QCResult, ResultAttachment, SpecificationVersion

    def first_ids(model, n: int = 2) -> list[int]:
        return list(db.session.scalars(select(model.id).order_by(model.id).limit(n)))

    return {"result_id": first_ids(QCResult), "attachment_id": first_ids(ResultAttachment),
            "version_id": first_ids(SpecificationVersion)}
