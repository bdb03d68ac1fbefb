"""Choosing the lots that supply the trial: candidates ranked by approved potency, then status,
stock and expiry; QA marks a released lot as selected with an e-signature. ``is_selected_for_trial``
is what the custody feature asks."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from labsys.auth.models import User
from labsys.auth.roles import Role
from labsys.auth.signatures import SignatureCheck, sign
from labsys.batches.models import Batch
from labsys.batches.states import BatchStatus, VialStatus
from labsys.db import utcnow
from labsys.errors import InvalidTransition
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.release import hooks
from labsys.release.models import TrialSelection
from labsys.release.specs import require_role, work

CANDIDATE_STATES = (BatchStatus.QUARANTINE, BatchStatus.RELEASED_PENDING, BatchStatus.RELEASED)
STATUS_RANK = {BatchStatus.RELEASED: 0, BatchStatus.RELEASED_PENDING: 1, BatchStatus.QUARANTINE: 2}


@dataclass
class Candidate:
    batch: Batch
    percent_inhibition: Decimal | None
    potency_run: str | None
    vials_in_stock: int
    expiry: dt.date | None
    selection: TrialSelection | None

    @property
    def selectable(self) -> bool:
        return self.selection is None and BatchStatus(self.batch.status) == BatchStatus.RELEASED


def selection_of(batch: Batch) -> TrialSelection | None:
    return db.session.scalar(select(TrialSelection).where(TrialSelection.batch_id == batch.id))


def is_selected_for_trial(batch: Batch) -> bool:
    """True when QA selected this lot for the trial and it is still released."""
    return counts_as_selected(batch.status, selection_of(batch) is not None)


def counts_as_selected(status: BatchStatus | str, has_selection: bool) -> bool:
    """``is_selected_for_trial`` for a lot whose selection row was already read (scan paths)."""
    return BatchStatus(status) == BatchStatus.RELEASED and has_selection


def candidates() -> list[Candidate]:
    """Lots that could supply the trial, best first: highest approved % inhibition (lots without
    an approved run last), released before pending, more vials in stock, later expiry."""
    rows = []
    for batch in db.session.scalars(select(Batch).where(Batch.status.in_(CANDIDATE_STATES))):
        potency = hooks.potency_for(batch.identifier)
        stock = [v for v in batch.vials if VialStatus(v.status) in (VialStatus.QUARANTINE, VialStatus.AVAILABLE)]
        expiry = min((v.expiry_date for v in stock), default=None)
        rows.append(Candidate(batch, potency.percent_inhibition if potency else None,
                              potency.run_reference if potency else None, len(stock), expiry, selection_of(batch)))
    rows.sort(key=lambda c: (c.percent_inhibition is None, -(c.percent_inhibition or 0),
                             STATUS_RANK[BatchStatus(c.batch.status)], -c.vials_in_stock,
                             -(c.expiry.toordinal() if c.expiry else 0), c.batch.identifier))
    return rows


def select_for_trial(user: User, batch: Batch, check: SignatureCheck) -> TrialSelection:
    """QA selects a released lot for the trial, with an e-signature."""
    require_role(user, Role.QA)
    with work(user, "lot.select_for_trial", check.comment):
        if BatchStatus(batch.status) != BatchStatus.RELEASED:
            raise InvalidTransition(_("Only a released lot can be selected for the trial; %(id)s is %(status)s.",
                                      id=batch.identifier, status=BatchStatus(batch.status).value))
        if selection_of(batch) is not None:
            raise InvalidTransition(_("Lot %(id)s is already selected for the trial.", id=batch.identifier))
        potency = hooks.potency_for(batch.identifier)
        selection = TrialSelection(batch_id=batch.id, selected_at=utcnow(), selected_by_id=user.id,
                                   percent_inhibition=potency.percent_inhibition if potency else None,
                                   comment=check.comment)
        db.session.add(selection)
        sign(check, selection)
    return selection
