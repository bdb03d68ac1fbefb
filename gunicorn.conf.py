"""gunicorn settings for labsys, read by ``gunicorn -c gunicorn.conf.py wsgi:app`` (and, from the
repository root, by a plain ``gunicorn wsgi:app``). Command-line flags override them.

Synchronous workers, one request at a time each, behind a buffering reverse proxy (nginx reads
the whole request and writes the whole response for slow clients, and keeps their connections
alive; gunicorn's documentation recommends exactly this for sync workers). labsys's requests are
CPU-bound Python: threads in one process share one interpreter lock, so they add no capacity,
only GIL hand-offs and a wider spread of response times. Measured on the volume data with 32
closed-loop clients (wrk, SQLite, the same hour; benchmarks/README.md): sync workers served the
scan API at 867 req/s against 481 for 2 workers × 4 threads (p95 88 against 166 ms), and
`/healthz` at 1,918 against 608 req/s. More capacity comes from more workers (one per core) or more instances, not threads."""
workers = 2
worker_class = "sync"
# A request that takes longer than this is stuck, not slow: the worker is restarted.
timeout = 60
