"""Migrations: one head, and upgrading an empty database yields exactly the models' schema."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import upgrade
from sqlalchemy import inspect, text

from labsys.batches.search import outside_models
from labsys.extensions import db as _db
from tests.conftest import make_app


def _script_directory(app) -> ScriptDirectory:
    config = AlembicConfig()
    config.set_main_option("script_location", app.extensions["migrate"].directory)
    return ScriptDirectory.from_config(config)


def test_there_is_exactly_one_migration_head(app):
    assert len(_script_directory(app).get_heads()) == 1


def test_every_migration_has_a_dated_file_name(app):
    for revision in _script_directory(app).walk_revisions():
        name = revision.path.rsplit("/", 1)[-1]
        assert name[:8].isdigit() and name[8] == "_", name


@pytest.fixture
def empty_app(engine_name, tmp_path, sqlite_template):
    """An app on an empty database (no create_all): the migrations build everything."""
    if engine_name == "sqlite":
        empty = tmp_path / "empty-template.db"
        empty.touch()
        app, cleanup = make_app(engine_name, tmp_path, empty)
    else:
        app, cleanup = make_app(engine_name, tmp_path, sqlite_template)
        with app.app_context():
            _db.drop_all()
            with _db.engine.begin() as connection:
                connection.execute(text("DROP FUNCTION IF EXISTS labsys_refuse_change() CASCADE"))
    yield app
    cleanup()


def test_upgrade_from_empty_matches_the_models(empty_app):
    with empty_app.app_context():
        upgrade(directory=empty_app.extensions["migrate"].directory)
        with _db.engine.connect() as connection:
            # The identifier search index is kept outside the models (labsys.batches.search).
            context = MigrationContext.configure(connection, opts={"compare_type": True, "include_name": outside_models})
            differences = compare_metadata(context, _db.metadata)
        assert differences == []


def test_migrations_install_the_append_only_guards(empty_app):
    with empty_app.app_context():
        upgrade(directory=empty_app.extensions["migrate"].directory)
        with _db.engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                rows = connection.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'")).scalars().all()
            else:
                rows = connection.execute(text(
                    "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND "
                    "tgrelid::regclass::text NOT LIKE 'pg_%'")).scalars().all()
        guarded = {name.split("trg_")[1].rsplit("_no_", 1)[0] for name in rows}
        from labsys.audit.guards import guarded_tables
        assert guarded_tables() <= guarded
        assert {"audit_entries", "signatures"} <= guarded
        tables = set(inspect(_db.engine).get_table_names())
        assert "alembic_version" in tables
