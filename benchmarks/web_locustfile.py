"""Locust users for benchmarks/web_bench.py (run by it; not on its own).

The fixtures file (BENCH_FIXTURES) holds what web_bench.py prepared from the volume database:
an API token, signed vial and wristband payloads, search terms and page counts."""
from __future__ import annotations

import json
import os
import random

from locust import FastHttpUser, task

FIXTURES = json.loads(open(os.environ["BENCH_FIXTURES"]).read())


def _bearer() -> dict:
    return {"Authorization": f"Bearer {FIXTURES['token']}", "Content-Type": "application/json"}


class ScanUser(FastHttpUser):
    """A pharmacy scanner: POST /api/v1/scan with real signed vial (and some wristband) codes."""

    def on_start(self) -> None:
        self.headers = _bearer()

    @task
    def scan(self) -> None:
        payload = random.choice(FIXTURES["vial_payloads"] if random.random() < 0.9 else FIXTURES["patient_payloads"])
        self.client.post("/api/v1/scan", data=json.dumps({"payload": payload}), headers=self.headers,
                         name="POST /api/v1/scan")


class DispenseCheckUser(FastHttpUser):
    """The dispense page's live check: a wristband and one to three vial codes."""

    def on_start(self) -> None:
        self.headers = _bearer()

    @task
    def check(self) -> None:
        body = {"patient": random.choice(FIXTURES["patient_payloads"]),
                "vials": random.sample(FIXTURES["vial_payloads"], random.randint(1, 3))}
        self.client.post("/api/v1/dispense/check", data=json.dumps(body), headers=self.headers,
                         name="POST /api/v1/dispense/check")


class PageUser(FastHttpUser):
    """A signed-in QA user browsing the batch list, searching vials and paging the audit trail."""

    def on_start(self) -> None:
        # Sessions signed in by web_bench.py before the clock starts (argon2 is slow by design).
        self.headers = {"Cookie": f"session={random.choice(FIXTURES['sessions'])}"}

    @task
    def batch_list(self) -> None:
        page = random.randint(1, FIXTURES["batch_pages"])
        term = random.choice(FIXTURES["batch_terms"]) if random.random() < 0.3 else ""
        self._page(f"/batches/?page={page if not term else 1}&q={term}", "GET /batches/ (list)")

    @task
    def vial_search(self) -> None:
        term = random.choice(FIXTURES["vial_terms"])
        self._page(f"/batches/vials?q={term}", "GET /batches/vials?q= (search)")

    @task
    def audit_trail(self) -> None:
        page = random.randint(1, FIXTURES["audit_pages"])
        extra = random.choice(["", "", "&entity=vials", "&action=lot."])
        self._page(f"/audit/?page={page}{extra}", "GET /audit/ (trail)")

    def _page(self, path: str, name: str) -> None:
        """A page counts only when it is the page itself (a redirect to sign-in is an error)."""
        with self.client.get(path, name=name, headers=self.headers, allow_redirects=False,
                             catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")


class HealthUser(FastHttpUser):
    """The ceiling: the cheapest route the app has."""

    @task
    def health(self) -> None:
        self.client.get("/healthz", name="GET /healthz")
