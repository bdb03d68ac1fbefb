"""``flask --app wsgi labels verify PAYLOAD`` and ``labels print --batch ID --out FILE.pdf``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask.cli import AppGroup

from labsys.audit.services import Actor
from labsys.errors import RuleViolation

labels_cli = AppGroup("labels", help="Print and verify vial labels.")


@labels_cli.command("verify")
@click.argument("payload")
def verify_command(payload: str) -> None:
    """Print one JSON object describing PAYLOAD; exit 1 when its signature does not hold."""
    from flask import current_app

    from labsys.batches.labels import describe_payload

    with current_app.test_request_context():
        result = describe_payload(payload)
    click.echo(json.dumps(result, ensure_ascii=False, sort_keys=True))
    sys.exit(0 if result["valid"] else 1)


@labels_cli.command("print")
@click.option("--batch", "identifier", required=True, help="The batch's donation identifier.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reason", default=None, help="Required for a reprint.")
def print_command(identifier: str, out: Path, reason: str | None) -> None:
    """Write the batch's vial label sheet to a PDF; the print is counted (a reprint needs --reason)."""
    from labsys.batches.labels import vial_label_sheet_pdf
    from labsys.batches.services import find_batch
    from labsys.batches.vials import record_vial_label_print

    from flask import current_app

    with current_app.test_request_context():  # templates and gettext need a request's locale
        batch = find_batch(identifier)
        if batch is None:
            raise click.ClickException(f"no batch {identifier}")
        pdf = vial_label_sheet_pdf(batch)
        try:
            record_vial_label_print(None, batch, reason, actor=Actor.system("cli"))
        except RuleViolation as refused:
            raise click.ClickException("; ".join([refused.message, *refused.reasons]))
        count = len(batch.vials)
    out.write_bytes(pdf)
    click.echo(f"Wrote {count} vial labels of {identifier.upper()} to {out}")
