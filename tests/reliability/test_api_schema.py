"""Schemathesis sweep of /api/v1: the OpenAPI document the app serves is loaded from the WSGI app
(no network) and every operation is called with many generated requests, schema-conforming and
not, authenticated by a pharmacist's real API token, with the demo data loaded. Every answer
must be a documented status with the documented content type and body schema, and never 5xx.
Real scan codes of the demo data (vials, patients, boxes, certificates) are sent as well, so the
200 answers of every kind are checked against the schema too.

Examples per operation and mode: 25 × LABSYS_FUZZ_EXAMPLES (default 4 → 100; the full run, 40 → 1000)."""
from __future__ import annotations

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)
from sqlalchemy import select

from tests.conftest import load_all_demo_data
from tests.reliability.walk import fuzz_examples, write_figures

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class Isolated:
    """The WSGI app, each request in its own app context (own database session), as in production."""

    def __init__(self, app: Flask):
        self.app = app

    def __call__(self, environ, start_response):
        with self.app.app_context():
            return self.app.wsgi_app(environ, start_response)


def _real_codes() -> list[str]:
    from labsys.batches.models import Box, Vial
    from labsys.chain_of_custody import services
    from labsys.documents import codec
    from labsys.extensions import db
    from labsys.trial import services as trial_services

    codes = [services.vial_payload(v) for v in db.session.scalars(select(Vial).limit(10))]
    codes += [services.patient_payload(p) for p in trial_services.patients(trial_services.get_trial()) if p.randomized]
    codes += [codec.encode("box", b.code) for b in db.session.scalars(select(Box).limit(3))]
    codes += [codec.encode("certificate", d.number) for d in services.dispensings()]
    from labsys.release.decisions import decision_of
    from labsys.batches.models import Batch

    codes += [codec.encode("certificate", b.identifier) for b in db.session.scalars(select(Batch))
              if decision_of(b) is not None]
    return codes


def test_every_api_operation_answers_as_its_schema_says(app, engine_name, demo_users):
    from labsys.auth.services import create_api_token

    load_all_demo_data(app)
    _, secret = create_api_token(demo_users["pharmacist"], "schemathesis")
    auth = {"Authorization": f"Bearer {secret}"}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", Isolated(app), headers=auth)
    examples = 25 * fuzz_examples(4)  # 100 per operation and mode by default
    figures = {"engine": engine_name, "examples_per_operation_and_mode": examples, "operations": {},
               "requests": 0, "server_errors": 0, "schema_failures": 0}

    def record(operation_label: str, case, response):
        entry = figures["operations"].setdefault(operation_label, {"requests": 0, "statuses": {}})
        entry["requests"] += 1
        entry["statuses"][str(response.status_code)] = entry["statuses"].get(str(response.status_code), 0) + 1
        figures["requests"] += 1
        figures["server_errors"] += response.status_code >= 500
        try:
            case.validate_response(response, checks=CHECKS, headers=auth)
        except Exception:
            figures["schema_failures"] += 1
            raise

    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /scan", "POST /dispense/check", "GET /me"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def sweep(case):
                record(operation.label, case, case.call(headers=auth))

            sweep()
    scan = schema["/scan"]["POST"]
    kinds = set()
    for code in _real_codes():
        case = scan.Case(body={"payload": code}, media_type="application/json")
        response = case.call(headers=auth)
        record(scan.label, case, response)
        assert response.status_code == 200, (code, response.content[:200])
        kinds.add(response.json()["kind"])
    assert kinds == {"vial", "patient", "box", "certificate"}
    check = schema["/dispense/check"]["POST"]
    codes = _real_codes()
    case = check.Case(body={"patient": codes[-1], "vials": codes[:3]}, media_type="application/json")
    record(check.label, case, case.call(headers=auth))
    write_figures(f"api-schema-{engine_name}.json", figures)
    assert figures["server_errors"] == 0 and figures["schema_failures"] == 0
    assert figures["requests"] >= len(operations) * examples
