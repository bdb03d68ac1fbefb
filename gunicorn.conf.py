"""gunicorn settings for labsys, read by ``gunicorn -c gunicorn.conf.py wsgi:app`` (and, from the
repository root, by a plain ``gunicorn wsgi:app``). Command-line flags override them.

Threaded workers: each of the processes serves several requests at once, so a request waiting on
PostgreSQL (or on SQLite's disk) does not hold the CPU idle, and connections are kept alive
between a client's requests (a scanner or browser does not reconnect for every call). The
application keeps no per-request state outside Flask's request context and one database session
per request, so threads are safe; SQLAlchemy's pool (5 + 10 overflow per process) covers them."""
workers = 2
worker_class = "gthread"
threads = 4
keepalive = 5
# A request that takes longer than this is stuck, not slow: the worker is restarted.
timeout = 60
