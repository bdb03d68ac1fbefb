"""Search inside vial identifiers (a pharmacist types the last digits printed on a label) through
a trigram index, so that a decade of vials is not read on every search.

A term that can only match at the start of an identifier is a range on the unique index
(``batches.vials.identifier_matches``); any other term is "contains", which a B-tree cannot
answer: SQLite and PostgreSQL would read every identifier (≈ 20 ms and 40 ms for 100,000 vials).
Both engines index the identifiers' trigrams instead:

- SQLite: an FTS5 table with the ``trigram`` tokenizer over ``vials.identifier`` (external
  content: it stores the trigrams, not the identifiers), kept by triggers in the transaction
  that writes the vial. FTS5 answers ``LIKE '%…%'`` from its index when the term has three or
  more characters, and checks each candidate against the identifier itself.
- PostgreSQL: a GIN index with ``pg_trgm``'s ``gin_trgm_ops`` on ``vials.identifier``, which the
  planner uses for the same ``LIKE`` on the table itself.

Vials are never deleted (regulated records), so no trigger follows deletions. The index objects
are not models: ``create_all`` (tests) installs them with the table, the
migration ``20261203_d4a7c2e9b1f6`` on existing databases (a literal copy of these statements),
and ``outside_models`` keeps Alembic's model comparison from reporting them."""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import DDL, Table, column, event, false, select, table, true

FTS_TABLE = "vial_identifier_trigrams"
PG_INDEX = "ix_vials_identifier_trgm"
# What FTS5 creates beside its table (no _content table: the content is vials itself).
FTS_SHADOW_TABLES = tuple(f"{FTS_TABLE}_{suffix}" for suffix in ("data", "idx", "docsize", "config"))

IDENTIFIER_CHARACTERS = re.compile(r"^[0-9A-Z-]+$")


def sqlite_statements() -> list[str]:
    delete_old = (f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rowid, identifier) "
                  "VALUES ('delete', OLD.id, OLD.identifier);")
    insert_new = f"INSERT INTO {FTS_TABLE} (rowid, identifier) VALUES (NEW.id, NEW.identifier);"
    return [
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(identifier, content='vials', "
        "content_rowid='id', tokenize='trigram')",
        f"CREATE TRIGGER IF NOT EXISTS trg_vials_identifier_search_insert AFTER INSERT ON vials BEGIN {insert_new} END",
        "CREATE TRIGGER IF NOT EXISTS trg_vials_identifier_search_update AFTER UPDATE OF identifier ON vials "
        f"BEGIN {delete_old} {insert_new} END",
        # The identifiers already stored (none when the table is new).
        f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('rebuild')",
    ]


def postgresql_statements() -> list[str]:
    # pg_trgm is a trusted extension: the database owner may install it. It goes into public so
    # that a schema dropped with CASCADE (the tests' schemas) does not take it away from others;
    # the operator class is named in the schema where the extension actually is.
    return [
        "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public",
        "DO $$ DECLARE place text; BEGIN "
        "SELECT n.nspname INTO place FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_trgm'; "
        f"EXECUTE format('CREATE INDEX IF NOT EXISTS {PG_INDEX} ON vials USING gin (identifier %I.gin_trgm_ops)', "
        "place); END $$",
    ]


def statements_for(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return sqlite_statements()
    if dialect == "postgresql":
        return postgresql_statements()
    raise RuntimeError(f"no identifier search index for the {dialect} engine")


def keep_index(vials: Table) -> None:
    """Install the search index when ``metadata.create_all`` creates the vials table."""
    for dialect in ("sqlite", "postgresql"):
        for sql in statements_for(dialect):
            event.listen(vials, "after_create", DDL(sql.replace("%", "%%")).execute_if(dialect=dialect))


def outside_models(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Alembic's ``include_name``: False for the search index objects, which no model describes."""
    if type_ == "table":
        return name not in (FTS_TABLE, *FTS_SHADOW_TABLES)
    if type_ == "index":
        return name != PG_INDEX
    return True


def identifier_contains(identifier_column, id_column, term: str, dialect: str):
    """A condition: the identifier contains ``term`` (upper case), answered by the trigram index.
    Identifiers hold only 0-9, A-Z and '-', so a term with any other character matches nothing
    (and no LIKE wildcard ever needs escaping)."""
    if not term:
        return true()
    if not IDENTIFIER_CHARACTERS.match(term):
        return false()
    pattern = f"%{term}%"
    if dialect == "sqlite":
        trigrams = table(FTS_TABLE, column("rowid"), column("identifier"))
        return id_column.in_(select(trigrams.c.rowid).where(trigrams.c.identifier.like(pattern)))
    return identifier_column.like(pattern)
