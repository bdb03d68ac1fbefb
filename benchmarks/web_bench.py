"""Web benchmark: gunicorn (2 synchronous workers: gunicorn.conf.py) over the volume database, loaded by
wrk (default) or locust (--load locust) on loopback.

Scenarios, each 32 concurrent users for 30 s: (a) POST /api/v1/scan with real signed vial and
wristband codes and an API token, (b) POST /api/v1/dispense/check, (c) a signed-in QA user on the
batch list, vial search and audit trail (terms and pages varied), (d) GET /healthz as the ceiling.
Prints requests/s, p50/p95/p99 (ms), errors and the ratio to the ceiling per endpoint and engine.

Prepare the databases first (see benchmarks/README.md, "Web benchmark"):
    LABSYS_DATABASE_URL=sqlite:////tmp/perf/vol/labsys.db flask --app wsgi db upgrade
    LABSYS_DATABASE_URL=... flask --app wsgi perf-data --vials 100000
Run from the repository root:
    python benchmarks/web_bench.py --engine both [--duration 30] [--users 32]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
DEFAULT_URLS = {"sqlite": "sqlite:////tmp/perf/vol/labsys.db",
                "postgresql": "postgresql://postgres@127.0.0.1:5432/labsys_perf"}
SCENARIOS = [("scan", "ScanUser"), ("dispense check", "DispenseCheckUser"), ("pages", "PageUser"),
             ("ceiling", "HealthUser")]
GOALS_MS = {"POST /api/v1/scan": 50, "POST /api/v1/dispense/check": 50}
PAGE_GOAL_MS = 150


def prepare_fixtures(url: str, instance: str) -> dict:
    """API token, signed payloads, search terms and page counts from the volume database."""
    os.environ["LABSYS_DATABASE_URL"] = url
    os.environ["LABSYS_INSTANCE_PATH"] = instance
    from sqlalchemy import func, select

    from labsys import create_app
    from labsys.audit.models import AuditEntry
    from labsys.auth import services as auth_services
    from labsys.batches.models import Batch, Vial
    from labsys.chain_of_custody.services import patient_payload, vial_payload
    from labsys.cli import demo_password
    from labsys.extensions import db
    from labsys.trial.models import Patient

    app = create_app({"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context(), app.test_request_context():
        pharmacist = auth_services.find_user("pharmacist")
        _, token = auth_services.create_api_token(pharmacist, "web benchmark")
        vial_count = db.session.scalar(select(func.count(Vial.id)))
        rng = random.Random(7)
        ids = rng.sample(range(1, vial_count + 1), min(2000, vial_count))
        vials = list(db.session.scalars(select(Vial).where(Vial.id.in_(ids))))
        patients = [p for p in db.session.scalars(select(Patient).where(Patient.randomized_at.is_not(None)))]
        batches = list(db.session.scalars(select(Batch.identifier).order_by(func.random()).limit(200)))
        audit_count = db.session.scalar(select(func.max(AuditEntry.seq)))
        page_size = app.config["PAGE_SIZE"]
        fixtures = {
            "token": token, "password": demo_password(),
            "vial_payloads": [vial_payload(v) for v in vials],
            "patient_payloads": [patient_payload(p) for p in patients],
            # Whole identifiers, a lot's vials (its DIN) and the tail of an identifier.
            "vial_terms": [v.identifier for v in vials[:100]] + [b for b in batches[:50]]
                          + [v.identifier[-7:] for v in vials[100:150]],
            "batch_terms": batches,
            "batch_pages": min(40, max(1, (db.session.scalar(select(func.count(Batch.id))) // 25))),
            "audit_pages": min(40, max(1, audit_count // page_size)),
            "counts": {"vials": vial_count, "audit_entries": audit_count},
        }
    # Outside any app context: each sign-in is a request of its own (nothing cached in ``g``).
    password = fixtures.pop("password")
    fixtures["sessions"] = [_sign_in(app, "qa", password) for _ in range(SESSIONS)]
    return fixtures


SESSIONS = 8


def _sign_in(app, username: str, password: str) -> str:
    """A signed-in browser session (the cookie), made before the clock starts: signing in costs
    an argon2 hash by design and is not what the page benchmark measures."""
    import re

    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"csrf_token": token, "username": username, "password": password})
    if response.status_code != 302:
        raise RuntimeError(f"signing in as {username} failed ({response.status_code})")
    return client.get_cookie("session").value


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def start_gunicorn(url: str, instance: str, port: int, workers: int = 2) -> subprocess.Popen:
    """gunicorn as gunicorn.conf.py runs it in production: no access log of its own (the reverse
    proxy in front keeps it, README "Production layout"; formatting a line for /dev/null cost the
    workers 4 % of a dispensing check)."""
    env = {**os.environ, "LABSYS_DATABASE_URL": url, "LABSYS_INSTANCE_PATH": instance,
           "LABSYS_LOGIN_RATE_LIMIT": "10000 per minute"}
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "-w", str(workers), "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", "wsgi:app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        start_new_session=True)
    wait_for(f"http://127.0.0.1:{port}/healthz")
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def run_locust(user_class: str, hosts: list[str], fixtures_path: str, users: int, duration: int,
               workdir: str) -> list[dict]:
    """One headless locust run per host at once (users split between them); rows per endpoint."""
    processes = []
    share = [users // len(hosts) + (1 if i < users % len(hosts) else 0) for i in range(len(hosts))]
    for index, host in enumerate(hosts):
        prefix = f"{workdir}/{user_class}-{index}"
        processes.append((prefix, subprocess.Popen(
            [str(BIN / "locust"), "-f", str(ROOT / "benchmarks" / "web_locustfile.py"), "--headless",
             "-u", str(share[index]), "-r", str(share[index]), "-t", f"{duration}s", "--host", host,
             "--csv", prefix, "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5", user_class],
            env={**os.environ, "BENCH_FIXTURES": fixtures_path}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)))
    rows: dict[str, list[dict]] = {}
    for prefix, process in processes:
        _, stderr = process.communicate()
        if not Path(f"{prefix}_stats.csv").exists():
            raise RuntimeError(f"locust failed ({process.returncode}):\n{stderr[-3000:]}")
        with open(f"{prefix}_stats.csv") as handle:
            for row in csv.DictReader(handle):
                if row["Name"] in ("Aggregated", "login"):
                    continue
                rows.setdefault(row["Name"], []).append(row)
    return [merge(name, parts) for name, parts in rows.items()]


WRK_LUA = r"""
-- Generated by benchmarks/web_bench.py: prebuilt requests, taken in turn from a per-connection
-- random start; a response other than the one expected counts as an error.
local specs = { SPECS }
local expected = EXPECTED
local built = {}
local threads = {}
local index = 0
errors = 0  -- a global: done() reads each thread's count with thread:get

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for i, s in ipairs(specs) do
    built[i] = wrk.format(s[1], s[2], s[3], s[4])
  end
  index = math.random(#built)
end

function request()
  index = index + 1
  if index > #built then index = 1 end
  return built[index]
end

function response(status, headers, body)
  if status ~= expected then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("errors")
  end
  local e = summary.errors
  io.write(string.format(
    "WRK-RESULT {\"requests\": %d, \"duration_us\": %d, \"p50\": %.3f, \"p95\": %.3f, \"p99\": %.3f, \"max\": %.3f, \"errors\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    bad + e.connect + e.read + e.write + e.timeout))
end
"""


def lua_string(text: str) -> str:
    """A Lua string literal: printable ASCII as it is, every other byte as a decimal escape."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def wrk_requests(user_class: str, fixtures: dict, count: int = 4000) -> list[tuple[str, list]]:
    """The same mixes as the locust users, drawn in advance: (endpoint name, requests) pairs, one
    pair per endpoint; each request is (method, path, headers, body)."""
    rng = random.Random(11)
    bearer = {"Authorization": f"Bearer {fixtures['token']}", "Content-Type": "application/json"}
    if user_class == "ScanUser":
        bodies = [json.dumps({"payload": rng.choice(fixtures["vial_payloads"] if rng.random() < 0.9
                                                    else fixtures["patient_payloads"])}) for _ in range(count)]
        return [("POST /api/v1/scan", [("POST", "/api/v1/scan", bearer, b) for b in bodies])]
    if user_class == "DispenseCheckUser":
        bodies = [json.dumps({"patient": rng.choice(fixtures["patient_payloads"]),
                              "vials": rng.sample(fixtures["vial_payloads"], rng.randint(1, 3))})
                  for _ in range(count)]
        return [("POST /api/v1/dispense/check", [("POST", "/api/v1/dispense/check", bearer, b) for b in bodies])]
    if user_class == "PageUser":
        def cookie() -> dict:
            return {"Cookie": f"session={rng.choice(fixtures['sessions'])}"}

        batches, vials, trail = [], [], []
        for _ in range(count // 4):
            term = rng.choice(fixtures["batch_terms"]) if rng.random() < 0.3 else ""
            page = rng.randint(1, fixtures["batch_pages"])
            batches.append(("GET", f"/batches/?page={page if not term else 1}&q={term}", cookie(), None))
            vials.append(("GET", f"/batches/vials?q={rng.choice(fixtures['vial_terms'])}", cookie(), None))
            extra = rng.choice(["", "", "&entity=vials", "&action=lot."])
            trail.append(("GET", f"/audit/?page={rng.randint(1, fixtures['audit_pages'])}{extra}", cookie(), None))
        return [("GET /batches/ (list)", batches), ("GET /batches/vials?q= (search)", vials),
                ("GET /audit/ (trail)", trail)]
    if user_class == "HealthUser":
        return [("GET /healthz", [("GET", "/healthz", {}, None)])]
    raise ValueError(user_class)


def wrk_script(requests: list[tuple], expected: int = 200) -> str:
    def spec(method, path, headers, body) -> str:
        fields = ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items())
        return "{" + f"{lua_string(method)}, {lua_string(path)}, {{{fields}}}, " + (
            lua_string(body) if body is not None else "nil") + "}"

    return WRK_LUA.replace("SPECS", ",\n".join(spec(*r) for r in requests)).replace("EXPECTED", str(expected))


def run_wrk(user_class: str, hosts: list[str], fixtures_path: str, users: int, duration: int,
            workdir: str) -> list[dict]:
    """wrk (one thread, keep-alive connections, closed loop like the locust users): one process
    per endpoint of the scenario and per host, all at once, the users split between them."""
    fixtures = json.loads(Path(fixtures_path).read_text())
    endpoints = wrk_requests(user_class, fixtures)
    runs = [(name, requests, host) for name, requests in endpoints for host in hosts]
    share = [users // len(runs) + (1 if i < users % len(runs) else 0) for i in range(len(runs))]
    processes = []
    for index, (name, requests, host) in enumerate(runs):
        script = Path(f"{workdir}/{user_class}-{index}.lua")
        script.write_text(wrk_script(requests))
        processes.append((name, subprocess.Popen(
            ["wrk", "-t1", f"-c{share[index]}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), host],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    rows: dict[str, list[dict]] = {}
    for name, process in processes:
        stdout, stderr = process.communicate()
        line = next((l for l in stdout.splitlines() if l.startswith("WRK-RESULT ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed ({process.returncode}):\n{stdout[-2000:]}{stderr[-2000:]}")
        result = json.loads(line[len("WRK-RESULT "):])
        rows.setdefault(name, []).append({
            "Request Count": result["requests"], "Requests/s": result["requests"] / (result["duration_us"] / 1e6),
            "50%": result["p50"], "95%": result["p95"], "99%": result["p99"], "Failure Count": result["errors"]})
    return [merge(name, parts) for name, parts in rows.items()]


def merge(name: str, parts: list[dict]) -> dict:
    """Sum the rates and counts of parallel runs; percentiles weighted by request count."""
    total = sum(int(p["Request Count"]) for p in parts) or 1

    def weighted(key: str) -> float:
        return sum(float(p[key] or 0) * int(p["Request Count"]) for p in parts) / total

    return {"name": name, "rps": sum(float(p["Requests/s"]) for p in parts), "requests": total,
            "p50": weighted("50%"), "p95": weighted("95%"), "p99": weighted("99%"),
            "errors": sum(int(p["Failure Count"]) for p in parts)}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_engine(engine: str, url: str, instance: str, ports: list[int], users: int, duration: int,
                 workdir: str, scenarios: list[str], external: bool, load: str = "wrk") -> list[dict]:
    fixtures = prepare_fixtures(url, instance)
    path = f"{workdir}/fixtures-{engine}.json"
    Path(path).write_text(json.dumps(fixtures))
    servers = [] if external else [start_gunicorn(url, instance, port) for port in ports]
    try:
        results = []
        for label, user_class in SCENARIOS:
            if label not in scenarios:
                continue
            print(f"  {engine}: {label} ({users} users, {duration} s, load {load_average()})", flush=True)
            runner = run_wrk if load == "wrk" else run_locust
            results += runner(user_class, [f"http://127.0.0.1:{p}" for p in ports], path, users, duration,
                                  workdir)
        return results
    finally:
        for server in servers:
            stop(server)


def report(engine: str, results: list[dict]) -> None:
    ceiling = next((r["rps"] for r in results if r["name"] == "GET /healthz"), None)
    print(f"\n{engine}")
    print(f"{'endpoint':<34} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>7} "
          f"{'÷ceiling':>8}  goal")
    for r in results:
        goal_ms = GOALS_MS.get(r["name"], None if r["name"] == "GET /healthz" else PAGE_GOAL_MS)
        ratio = r["rps"] / ceiling if ceiling else float("nan")
        verdicts = []
        if goal_ms is not None:
            verdicts.append(f"p95≤{goal_ms} {'met' if r['p95'] <= goal_ms else 'MISSED'}")
        if r["name"] == "POST /api/v1/scan":
            verdicts.append(f"≥30% ceiling {'met' if ratio >= 0.30 else 'MISSED'}")
        if r["errors"]:
            verdicts.append("ERRORS")
        print(f"{r['name']:<34} {r['rps']:>8.1f} {r['p50']:>7.0f} {r['p95']:>7.0f} {r['p99']:>7.0f} "
              f"{r['errors']:>7d} {ratio:>8.2f}  {', '.join(verdicts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--sqlite-url", default=os.environ.get("BENCH_SQLITE_URL", DEFAULT_URLS["sqlite"]))
    parser.add_argument("--postgresql-url", default=os.environ.get("BENCH_POSTGRESQL_URL", DEFAULT_URLS["postgresql"]))
    parser.add_argument("--instance", default="/tmp/perf/vol/inst", help="LABSYS_INSTANCE_PATH (signing key)")
    parser.add_argument("--ports", default="5100", help="comma-separated, one gunicorn per port (5100-5199)")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--json", help="write the figures to this file too")
    parser.add_argument("--scenarios", default=",".join(label for label, _ in SCENARIOS),
                        help="comma-separated subset of: " + ", ".join(label for label, _ in SCENARIOS))
    parser.add_argument("--load", choices=["wrk", "locust"], default="wrk",
                        help="load generator: wrk (C, a few %% of a core) or locust (Python, most of a core at "
                             "1,000 req/s, taken from the server it measures on a 2-core machine)")
    parser.add_argument("--external", action="store_true",
                        help="the servers already run on --ports (scale_out.sh starts them); start none")
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",")]
    if any(not 5100 <= p <= 5199 for p in ports):
        parser.error("ports must be within 5100-5199")
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    urls = {"sqlite": args.sqlite_url, "postgresql": args.postgresql_url}
    print(f"load average before: {load_average()} (2 cores)")
    figures = {}
    with tempfile.TemporaryDirectory(prefix="web-bench-") as workdir:
        for engine in engines:
            # Fixtures are prepared in a child so each engine gets a fresh app and environment.
            output = subprocess.run([sys.executable, __file__, "--_one", engine, urls[engine], args.instance,
                                     ",".join(map(str, ports)), str(args.users), str(args.duration), workdir,
                                     args.scenarios, "external" if args.external else "own", args.load],
                                    capture_output=True, text=True)
            sys.stdout.write(output.stderr)
            if output.returncode:
                raise SystemExit(f"{engine}: the benchmark run failed")
            figures[engine] = json.loads(output.stdout)
            report(engine, figures[engine])
    print(f"\nload average after: {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_one":
        engine, url, instance, ports, users, duration, workdir, scenarios, servers, load = sys.argv[2:12]
        sys.stdout, real_stdout = sys.stderr, sys.stdout
        results = bench_engine(engine, url, instance, [int(p) for p in ports.split(",")], int(users),
                               int(duration), workdir, scenarios.split(","), servers == "external", load)
        real_stdout.write(json.dumps(results))
    else:
        main()
