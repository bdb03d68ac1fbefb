"""The QA audit-trail page and its CSV export."""
from __future__ import annotations

import csv
import io

from sqlalchemy import select

from labsys.audit.models import AuditEntry
from labsys.auth import services as auth


def test_qa_filters_the_trail_by_record_user_and_action(login_as, demo_users):
    auth.deactivate_user(auth.actor_of(demo_users["admin"]), demo_users["technician2"], "contract ended")
    qa = login_as("qa")
    page = qa.get("/audit/?entity=users&action=user.deactivate").get_data(as_text=True)
    assert "contract ended" in page and "user.deactivate" in page
    assert "user.create" not in page
    page = qa.get("/audit/?user=nobody-like-this").get_data(as_text=True)
    assert "No entries match." in page


def test_a_bad_date_filter_says_so(login_as):
    page = login_as("qa").get("/audit/?from=25-11-2026").get_data(as_text=True)
    assert "YYYY-MM-DD" in page


def test_the_csv_export_has_every_entry_and_is_itself_audited(login_as, db):
    qa = login_as("qa")
    total = len(db.session.scalars(select(AuditEntry)).all())
    response = qa.get("/audit/export.csv")
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == total
    assert rows[0]["hash"] and rows[-1]["seq"] == str(total)
    export = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "audit.export")).one()
    assert '"rows":' in export.new_values


def test_technicians_cannot_read_the_audit_trail(login_as):
    assert login_as("technician").get("/audit/").status_code == 403
    assert login_as("technician").get("/audit/export.csv").status_code == 403
