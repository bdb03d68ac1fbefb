"""Search inside vial identifiers through the trigram index (labsys.batches.search), both engines:
the same vials as reading every identifier, the index actually answering, and the index
following the vials table in the same transaction."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from sqlalchemy import select, text

from labsys.batches import search
from labsys.batches.models import Vial
from labsys.batches.vials import identifier_matches
from labsys.db import write_transaction
from labsys.extensions import db
from tests.test_query_counts import _generate


def _found(term: str) -> set[str]:
    return set(db.session.scalars(select(Vial.identifier).where(identifier_matches(term))))


def test_terms_inside_identifiers_find_exactly_the_vials_that_contain_them(app):
    _generate(app, 80)
    identifiers = list(db.session.scalars(select(Vial.identifier)))
    assert len(identifiers) >= 60
    sample, other = identifiers[len(identifiers) // 3], identifiers[-1]
    terms = [sample[-7:], sample[-3:], sample[4:12], other[-5:], sample[-2:], "9", "00", "-", "0482003999",
             sample[-4:].lower(), " " + sample[-6:] + " ", "0_1", "%", "00%", "中文"]
    for term in terms:
        expected = {i for i in identifiers if term.strip().upper() in i}
        assert _found(term) == expected, term
    assert _found(sample[-7:]) and _found("9") == {i for i in identifiers if "9" in i}


def test_the_trigram_index_answers_the_search(app):
    _generate(app, 20)
    condition = identifier_matches("0001")
    statement = select(Vial.id).where(condition)
    compiled = statement.compile(db.engine, compile_kwargs={"literal_binds": True})
    if db.engine.dialect.name == "sqlite":
        plan = " ".join(str(row) for row in db.session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
        assert f"SCAN {search.FTS_TABLE} VIRTUAL TABLE INDEX" in plan, plan
    else:
        with write_transaction(db.session):  # SET LOCAL lasts for a transaction (reads run without one)
            db.session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(db.session.scalars(text(f"EXPLAIN {compiled}")))
            assert search.PG_INDEX in plan, plan
    db.session.rollback()


def test_the_index_follows_a_changed_identifier_in_the_same_transaction(app):
    _generate(app, 12)
    vial_id, old = db.session.execute(select(Vial.id, Vial.identifier).order_by(Vial.id)).first()
    new = old[:-4] + "-ZQX"
    # Identifiers are never edited by labsys; the triggers keep the index right whatever writes.
    with write_transaction(db.session):
        db.session.execute(text("UPDATE vials SET identifier = :new WHERE id = :id"), {"new": new, "id": vial_id})
        assert _found("-ZQX") == {new}
        assert old not in _found(old[-8:])
        db.session.rollback()
    assert _found(old[-8:]) >= {old} and _found("-ZQX") == set()


def test_the_migration_carries_the_statements_of_its_revision():
    path = next(Path(__file__).resolve().parents[2].glob("migrations/versions/*_d4a7c2e9b1f6_*.py"))
    spec = importlib.util.spec_from_file_location("vial_search_migration", path)
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    # A change to labsys.batches.search needs a new migration, not an edit of this one.
    assert migration.SQLITE == search.sqlite_statements()
    assert migration.POSTGRESQL == search.postgresql_statements()


def test_the_batch_list_search_finds_the_lots_by_identifier_or_donor_code(app, login_as):
    from labsys.batches.models import Batch, Cord, Donor

    _generate(app, 80)
    lots = db.session.execute(select(Batch.identifier, Donor.code).join(Cord, Batch.cord_id == Cord.id)
                              .join(Donor, Cord.donor_id == Donor.id)).all()
    assert len(lots) < 25  # one page holds every match
    sample_identifier, sample_donor = lots[len(lots) // 2]
    qa = login_as("qa")
    for term in [sample_identifier, sample_identifier[:10], sample_identifier[-5:], sample_donor[-4:].lower(),
                 sample_donor, "ZZZ-NOTHING"]:
        page = qa.get("/batches/", query_string={"q": term}).get_data(as_text=True)
        upper = term.upper()
        expected = {i for i, code in lots if upper in i or upper in code.upper()}
        assert {i for i, _ in lots if f">{i} <" in page} == expected, term
