"""BV2 co-culture potency assay: runs, plate layout, field images, scoring jobs, review,
trending and calibration. The image analysis itself (analysis.py) is pure and imports no Flask.

What other features read: ``services.approved_potency_for_lot(lot_identifier)`` returns the
most recent approved run's result for a lot under test (``ApprovedPotency``: ``value`` /
``percent_inhibition`` over all the lot's MSC:BV2 ratios, ``relative_potency``, ``run_id``,
``run_code``, ``valid``, ``assay_date``, ``approved_at``) or None.

Settings (``app.config``; defaults below): where images live, upload limits, the scoring pool
size and the Huey queue (``LABSYS_HUEY_URL=redis://…`` selects Redis; otherwise a SQLite file
under instance/). Run the queue with ``flask --app wsgi potency-jobs worker``."""
from __future__ import annotations

from flask import Flask

DEFAULTS = {
    "POTENCY_IMAGE_DIR": None,  # None: instance/images
    "POTENCY_MAX_IMAGE_MB": 64,
    "POTENCY_MAX_IMAGE_PIXELS": 40_000_000,  # decompression-bomb limit, checked from the header
    "POTENCY_MAX_ZIP_ENTRIES": 500,
    "POTENCY_MAX_ZIP_MB": 2048,
    "POTENCY_SCORING_PROCESSES": 2,  # a process pool over fields: both cores
    "POTENCY_HUEY_IMMEDIATE": False,  # tests run jobs inline
    "POTENCY_HUEY_FILE": None,  # None: instance/huey.db
}


def init_app(app: Flask) -> None:
    from labsys.i18n import lazy_gettext as _l

    from labsys.auth.roles import Role
    from labsys.navigation import add_demo_loader, add_nav, add_panel, add_route_examples
    from labsys.potency import jobs, models, views  # noqa: F401  (models registers the tables)
    from labsys.potency.demo import load_demo_data

    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    app.register_blueprint(views.bp)
    app.register_blueprint(views.api)
    add_nav(app, _l("Potency"), "potency.index", [Role.TECHNICIAN, Role.QA], order=300)
    add_panel(app, "potency/_panel.html", [Role.TECHNICIAN, Role.QA], views.panel_context, order=300)
    add_demo_loader(app, load_demo_data, order=300)
    add_route_examples(app, views.route_examples)
    jobs.register(app)
    app.cli.add_command(jobs.jobs_cli)
    from labsys.potency.cli import potency_cli

    app.cli.add_command(potency_cli)
