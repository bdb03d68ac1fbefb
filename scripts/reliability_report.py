"""Print the figures of RELIABILITY.md from the JSON files the reliability tests write to
test-artifacts/reliability/ (run the tests first, e.g. `make test`); with --write, put them into
RELIABILITY.md between its <!-- figures:NAME --> ... <!-- /figures --> markers.

    .venv/bin/python scripts/reliability_report.py [--write]
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "reliability"
ENGINES = ("sqlite", "postgresql")


def _load(name: str, engine: str) -> dict | None:
    path = ARTIFACTS / f"{name}-{engine}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def soak() -> list[str]:
    lines = ["| engine | workers × seconds | attempted | succeeded | refused | failed | invariants | audit entries verified |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for engine in ENGINES:
        d = _load("soak", engine)
        if not d:
            continue
        t = d["totals"]
        invariants = d["invariants"]
        held = sum(1 for v in invariants.values() if isinstance(v, dict) and v.get("ok"))
        chain = invariants.get("verify_chain", {})
        entries = chain.get("entries", "—") if isinstance(chain, dict) else "—"
        lines.append(f"| {engine} | {d['workers']} × {d['seconds']:.0f} s | {t['attempted']} | {t['succeeded']} | "
                     f"{t['refused']} | {t['failed']} | {held} of {len(invariants)} hold | {entries} |")
    lines.append("")
    lines.append("Operations by kind (attempted / succeeded / refused):")
    lines.append("")
    for engine in ENGINES:
        d = _load("soak", engine)
        if not d:
            continue
        kinds = ", ".join(f"{k} {d['attempted'][k]}/{d['succeeded'].get(k, 0)}/{d['refused'].get(k, 0)}"
                          for k in sorted(d["attempted"]))
        lines.append(f"- {engine}: {kinds}")
    return lines


def crash() -> list[str]:
    lines = ["| engine | scenario | statements in a full run | kill points | survived | lost or partial |",
             "| --- | --- | --- | --- | --- | --- |"]
    for engine in ENGINES:
        d = _load("crash", engine)
        if not d:
            continue
        for scenario in d["summary"]["scenarios"]:
            s = d[scenario]
            full = s.get("full_run", {}).get("statements", "—")
            kills = s.get("kills", [])
            lost = s.get("lost_or_partial")
            if lost is None:
                lost = sum(1 for k in kills if k.get("expected") != k.get("found") or not k.get("chain", {}).get("ok", True))
            lines.append(f"| {engine} | {scenario.replace('_', ' ')} | {full} | {len(kills)} | "
                         f"{s.get('kill_points_survived', '—')} | {lost} |")
    return lines


def api_schema() -> list[str]:
    lines = ["| engine | operation | requests | statuses |", "| --- | --- | --- | --- |"]
    totals = []
    for engine in ENGINES:
        d = _load("api-schema", engine)
        if not d:
            continue
        for operation, o in sorted(d["operations"].items()):
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(o["statuses"].items()))
            lines.append(f"| {engine} | `{operation}` | {o['requests']} | {statuses} |")
        totals.append(f"{engine}: {d['requests']} requests, 5xx {d['server_errors']}, "
                      f"responses not matching the spec {d['schema_failures']}")
    return lines + [""] + [f"- {t}" for t in totals]


def form_fuzz() -> list[str]:
    lines = ["| engine | routes × roles | posts | accepted | refused | 5xx | writes on refusal | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for engine in ENGINES:
        d = _load("form-fuzz", engine)
        if not d:
            continue
        lines.append(f"| {engine} | {d['routes']} × {len(d['roles'])} | {d['posts']} | {d['accepted']} | {d['refused']} | "
                     f"{d['server_errors']} | {d['writes_on_refusal']} | {d['seconds']:.0f} |")
    return lines


def uploads() -> list[str]:
    lines = ["| refused upload | " + " | ".join(f"{e}: peak traced memory" for e in ENGINES) + " | stored |",
             "| --- | " + " | ".join("---" for _ in ENGINES) + " | --- |"]
    figures = {e: _load("upload-abuse", e) or {} for e in ENGINES}
    for case in sorted(set().union(*figures.values())):
        cells = [f"{figures[e][case]['peak_mib']} MiB" if case in figures[e] else "—" for e in ENGINES]
        lines.append(f"| {case.replace('_', ' ')} | " + " | ".join(cells) + " | 0 |")
    bound = next((f[c]["bound_mib"] for f in figures.values() for c in f), None)
    return lines + ([f"", f"Bound asserted per request: {bound} MiB."] if bound else [])


def _per_engine(name: str, describe) -> str:
    parts = [f"{engine}: {describe(d)}" for engine in ENGINES if (d := _load(name, engine))]
    return "; ".join(parts) or "not run"


def summaries() -> dict[str, str]:
    def soak_line(d):
        t = d["totals"]
        held = sum(1 for v in d["invariants"].values() if isinstance(v, dict) and v.get("ok"))
        return (f"{d['workers']} processes × {d['seconds']:.0f} s, {t['attempted']} operations, {t['succeeded']} "
                f"succeeded, {t['refused']} refused, {t['failed']} failed, {held}/{len(d['invariants'])} invariants hold")

    def crash_line(d):
        lost = sum((d[s].get("lost_or_partial") or 0) for s in d["summary"]["scenarios"])
        return (f"{d['summary']['kill_points_survived']} of {d['summary']['kill_points']} kill points survived "
                f"in {len(d['summary']['scenarios'])} services, lost or partial {lost}")

    def upload_line(d):
        worst = max(v["peak_mib"] for v in d.values())
        return f"{len(d)} abuse cases refused, 0 stored, worst peak {worst} MiB (bound {next(iter(d.values()))['bound_mib']} MiB)"

    return {
        "soak-summary": _per_engine("soak", soak_line),
        "crash-summary": _per_engine("crash", crash_line),
        "api-summary": _per_engine("api-schema", lambda d: f"{d['requests']} requests over {len(d['operations'])} "
                                   f"operations, 5xx {d['server_errors']}, off-spec responses {d['schema_failures']}"),
        "fuzz-summary": _per_engine("form-fuzz", lambda d: f"{d['posts']} posts over {d['routes']} routes × "
                                    f"{len(d['roles'])} roles, 5xx {d['server_errors']}, writes on refusal "
                                    f"{d['writes_on_refusal']}"),
        "upload-summary": _per_engine("upload-abuse", upload_line),
    }


def bandit() -> str:
    try:
        out = subprocess.run([sys.executable, "-m", "bandit", "-r", str(ROOT / "labsys"), "-q", "-f", "json"],
                             capture_output=True, text=True, timeout=600).stdout
        results = json.loads(out)["results"]
    except Exception as error:  # report, don't fail: the test enforces the rule
        return f"bandit could not run ({error})"
    counts = {level: sum(1 for r in results if r["issue_severity"] == level) for level in ("HIGH", "MEDIUM", "LOW")}
    return (f"bandit: {counts['HIGH']} high, {counts['MEDIUM']} medium, {counts['LOW']} low-severity findings "
            "(the test fails on any high)")


def run_info() -> str:
    stamps = [p.stat().st_mtime for p in ARTIFACTS.glob("*.json")]
    when = dt.datetime.fromtimestamp(max(stamps), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if stamps else "—"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"Figures above: files written {when}; machine {os.cpu_count()} cores (load average now {load}); "
            "CI settings (`LABSYS_SOAK_SECONDS` unset = 15 s per engine, `LABSYS_FUZZ_EXAMPLES` unset = 4).")


SECTIONS = (("soak", "Race soak", soak), ("crash", "Crash safety", crash), ("api", "Schemathesis on /api/v1", api_schema),
            ("fuzz", "Form fuzzer", form_fuzz), ("upload", "Upload abuse", uploads))


def write(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    values = {name: "\n".join(section()) for name, _, section in SECTIONS}
    values.update(summaries())
    values["bandit"] = bandit()
    values["run"] = run_info()

    def fill(match: re.Match) -> str:
        name, inner = match.group(1), match.group(2)
        value = values.get(name, inner)
        return f"<!-- figures:{name} -->" + (f"\n{value}\n" if "\n" in inner else value) + "<!-- /figures -->"

    path.write_text(re.sub(r"<!-- figures:([\w-]+) -->(.*?)<!-- /figures -->", fill, text, flags=re.S),
                    encoding="utf-8")


def main() -> int:
    if not ARTIFACTS.is_dir():
        print(f"No figures in {ARTIFACTS}: run the reliability tests first.", file=sys.stderr)
        return 1
    if "--write" in sys.argv[1:]:
        write(ROOT / "RELIABILITY.md")
        print("RELIABILITY.md updated")
        return 0
    for _, title, section in SECTIONS:
        print(f"### {title}\n")
        print("\n".join(section()))
        print()
    for name, value in summaries().items():
        print(f"- {name}: {value}")
    print(f"- {bandit()}")
    print(f"- {run_info()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
