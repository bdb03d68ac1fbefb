"""Print the figures tables of RELIABILITY.md from the JSON files the reliability tests write to
test-artifacts/reliability/ (run the tests first, e.g. `make test`).

    .venv/bin/python scripts/reliability_report.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "reliability"
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


def main() -> int:
    if not ARTIFACTS.is_dir():
        print(f"No figures in {ARTIFACTS}: run the reliability tests first.", file=sys.stderr)
        return 1
    for title, section in (("Race soak", soak), ("Crash safety", crash),
                           ("Schemathesis on /api/v1", api_schema), ("Form fuzzer", form_fuzz), ("Upload abuse", uploads)):
        print(f"### {title}\n")
        print("\n".join(section()))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
