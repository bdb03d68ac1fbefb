"""Imported once by the reliability tests' forkserver (tests/reliability/processes.py): every
labsys feature, the test builders and the workers, so that forked children start at once.
Building a throw-away app imports what ``create_app`` imports lazily; it opens no connection."""
from __future__ import annotations

import labsys
from tests.conftest import _config
from tests.reliability import crash_child, soak_worker  # noqa: F401
from tests.release import conftest as _release_builders  # noqa: F401
from tests.trial import conftest as _trial_builders  # noqa: F401

labsys.create_app(_config("sqlite://"))

from sqlalchemy.orm import configure_mappers  # noqa: E402

configure_mappers()  # done once here, not on each child's first query
