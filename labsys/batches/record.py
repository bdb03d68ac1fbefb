"""The batch record: everything about one batch gathered for the page and the PDF, and the
growth chart (cumulative population doublings over days) drawn server-side as SVG."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from markupsafe import Markup, escape
from sqlalchemy import or_, select

from labsys.audit.models import AuditEntry
from labsys.auth.signatures import signatures_for
from labsys.batches.models import Batch, Passage
from labsys.batches.services import deviations_of, donor_decision, open_deviations, unverified_entries
from labsys.batches.vials import custody_events, label_prints_of, vials_of
from labsys.extensions import db


def growth_points(batch: Batch) -> list[tuple[float, float, int]]:
    """(days since batch start, cumulative PD, passage number) at each passage's harvest."""
    points = []
    for passage in batch.passages:
        when = passage.step.ended_at or passage.step.started_at
        days = (when - batch.cord.received_at).total_seconds() / 86400
        points.append((round(days, 2), float(passage.cumulative_population_doublings), passage.passage_number))
    return points


def growth_chart_svg(points: list[tuple[float, float, int]], width: int = 560, height: int = 260,
                     x_label: str = "days", y_label: str = "cumulative PD") -> Markup:
    """An accessible inline SVG line chart; no JavaScript and no external library."""
    left, right, top, bottom = 52, 16, 14, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    max_x = max([p[0] for p in points] + [1.0])
    max_y = max([p[1] for p in points] + [1.0])
    min_y = min([p[1] for p in points] + [0.0])
    span_y = (max_y - min_y) or 1.0
    sx = lambda x: left + plot_w * x / max_x  # noqa: E731
    sy = lambda y: top + plot_h * (1 - (y - min_y) / span_y)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="growth-chart" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{escape(y_label)} / {escape(x_label)}">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfcfe" stroke="#c5ced9"/>']
    for i in range(5):
        y_value = min_y + span_y * i / 4
        y = sy(y_value)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e8ee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{y_value:.1f}</text>')
        x_value = max_x * i / 4
        x = sx(x_value)
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="11" text-anchor="middle">'
                     f'{x_value:.0f}</text>' if max_x >= 8 else
                     f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="11" text-anchor="middle">{x_value:.1f}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" font-size="12" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text x="14" y="{top + plot_h / 2:.0f}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + plot_h / 2:.0f})">{escape(y_label)}</text>')
    if points:
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y, _n) in enumerate(points))
        parts.append(f'<path d="{path}" fill="none" stroke="#1f5fa8" stroke-width="2"/>')
        for x, y, number in points:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="#1f5fa8">'
                         f'<title>P{number}: {y:.2f} @ {x:.1f} d</title></circle>')
            parts.append(f'<text x="{sx(x):.1f}" y="{sy(y) - 8:.1f}" font-size="10" text-anchor="middle">P{number}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def audit_entries_of(batch: Batch, limit: int = 1000) -> list[AuditEntry]:
    """Audit entries of the batch and the records that make it up.

    Creation entries are matched on the record's id or batch id in their new values as well as
    on ``entity_id`` (the audit flush listener may record a new row before its identity is set)."""
    def created(table: str, key: str, value: int):
        return ((AuditEntry.entity_type == table) & AuditEntry.entity_id.is_(None)
                & or_(AuditEntry.new_values.like(f'%"{key}":{value},%'), AuditEntry.new_values.like(f'%"{key}":{value}}}')))

    def changed(table: str, ids: list[int]):
        return (AuditEntry.entity_type == table) & AuditEntry.entity_id.in_([str(i) for i in ids])

    conditions = [
        changed("batches", [batch.id]), created("batches", "id", batch.id),
        changed("cords", [batch.cord_id]), created("cords", "id", batch.cord_id),
        changed("donors", [batch.cord.donor_id]), created("donors", "id", batch.cord.donor_id),
        (AuditEntry.entity_type == "batches") & (AuditEntry.entity_id == str(batch.id)),
    ]
    for table, records in (("passages", batch.passages), ("process_steps", batch.steps), ("vials", batch.vials),
                           ("deviations", deviations_of(batch))):
        if records:
            conditions.append(changed(table, [r.id for r in records]))
        conditions.append(created(table, "batch_id", batch.id))
    conditions.append(created("fills", "batch_id", batch.id))
    if batch.fill is not None:
        conditions.append(changed("fills", [batch.fill.id]))
    return list(db.session.scalars(select(AuditEntry).where(or_(*conditions)).order_by(AuditEntry.seq).limit(limit)))


def batch_record(batch: Batch) -> dict[str, Any]:
    """Everything the batch record page and PDF show."""
    vials = vials_of(batch)
    passages: list[Passage] = batch.passages
    return {
        "batch": batch,
        "cord": batch.cord,
        "donor": batch.cord.donor,
        "donor_decision": donor_decision(batch.cord.donor, batch.cord.collected_at.date()),
        "donor_signatures": signatures_for(batch.cord.donor),
        "steps": batch.steps,
        "passages": passages,
        "passage_signatures": {p.id: signatures_for(p) for p in passages},
        "unverified": unverified_entries(batch),
        "deviations": deviations_of(batch),
        "deviation_signatures": {d.id: signatures_for(d) for d in deviations_of(batch)},
        "open_deviations": open_deviations(batch),
        "vials": vials,
        "fill": batch.fill,
        "fill_signatures": signatures_for(batch.fill) if batch.fill else [],
        "label_prints": label_prints_of(batch),
        "custody": {v.id: custody_events(v) for v in vials} if len(vials) <= 200 else {},
        "audit_entries": audit_entries_of(batch),
        "growth_points": growth_points(batch),
        "total_pd": passages[-1].cumulative_population_doublings if passages else Decimal("0"),
    }
