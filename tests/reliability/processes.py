"""Child processes for the reliability tests: real OS processes, each with its own app, engine
and database connections, started quickly enough that a test can start dozens of them.

They come from a ``forkserver``: a fresh interpreter (nothing inherited from pytest: no open
connection, no lock, no thread) that imports labsys and its features once; each child is then
forked from it in milliseconds instead of paying the 2 s import of a ``spawn`` on every start
(far more on a loaded machine). Each child builds its own app with ``create_app`` on the shared
database URL, exactly as a separately started web or job worker would."""
from __future__ import annotations

import multiprocessing

PRELOAD = ["tests.reliability.preload"]


def context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx
