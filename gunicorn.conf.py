"""gunicorn settings for labsys, read by ``gunicorn -c gunicorn.conf.py wsgi:app`` (and, from the
repository root, by a plain ``gunicorn wsgi:app``). Command-line flags override them.

Synchronous workers, one request at a time each, behind a buffering reverse proxy (nginx reads
the whole request and writes the whole response for slow clients, and keeps their connections
alive; gunicorn's documentation recommends exactly this for sync workers). labsys's requests are
CPU-bound Python: threads in one process share one interpreter lock, so they add no capacity,
only GIL hand-offs and a wider spread of response times. Measured on the volume data with 32
closed-loop clients (benchmarks/README.md): sync workers serve the scan API at ≈ 1.7× the rate
of 2 workers × 4 threads with a third of the p95, and `/healthz` at ≈ 3×, with less CPU per
request. More capacity comes from more workers (one per core) or more instances, not threads."""
workers = 2
worker_class = "sync"
# A request that takes longer than this is stuck, not slow: the worker is restarted.
timeout = 60
