"""Where release reads what later or parallel features know, without importing them.

* Potency: ``approved_potency_for_lot(lot_identifier)`` from ``labsys.potency.services`` when that
  feature is installed; otherwise there is no approved run.
* Dispensed vials' patients (recall page): a feature that knows which patient a vial was dispensed
  to (trial / chain of custody, which sit above release) registers a lookup with
  ``register_patient_lookup(app, fn)``, ``fn(vials) -> {vial_id: study_id}``."""
from __future__ import annotations

import importlib
from decimal import Decimal
from typing import Any, Callable, Iterable

from flask import Flask, current_app

from labsys.release.rules import PotencyFact

_PATIENT_LOOKUP_KEY = "labsys_release_patient_lookup"


def _potency_function() -> Callable[[str], Any] | None:
    try:
        module = importlib.import_module("labsys.potency.services")
    except ModuleNotFoundError as error:  # the potency feature is not installed; anything else is a bug
        if error.name and (error.name == "labsys.potency" or error.name.startswith("labsys.potency.")):
            return None
        raise
    return getattr(module, "approved_potency_for_lot", None)


def _pick(source: Any, *names: str) -> Any:
    for name in names:
        if isinstance(source, dict) and name in source:
            return source[name]
        if hasattr(source, name):
            return getattr(source, name)
    return None


def potency_for(lot_identifier: str) -> PotencyFact | None:
    """The approved potency result of a lot as the release rules see it, or None."""
    function = current_app.extensions.get("labsys_release_potency") or _potency_function()
    if function is None:
        return None
    found = function(lot_identifier)
    if found is None:
        return None
    value = _pick(found, "percent_inhibition", "percent_inhibition_value")
    valid = _pick(found, "run_valid", "valid", "is_valid")
    reference = _pick(found, "run_reference", "run_identifier", "run_number", "run_code", "run_id")
    return PotencyFact(None if value is None else Decimal(str(value)),
                       True if valid is None else bool(valid), str(reference) if reference is not None else "—")


def register_patient_lookup(app: Flask, lookup: Callable[[Iterable[Any]], dict[int, str]]) -> None:
    app.extensions[_PATIENT_LOOKUP_KEY] = lookup


def patients_of(vials: list[Any]) -> dict[int, str]:
    lookup = current_app.extensions.get(_PATIENT_LOOKUP_KEY)
    return dict(lookup(vials)) if lookup and vials else {}


def patient_lookup_available() -> bool:
    return _PATIENT_LOOKUP_KEY in current_app.extensions
