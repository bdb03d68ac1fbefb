"""Masking: who may see a patient's treatment arm.

While the trial is masked only users with ``Permission.UNBLINDED`` (the pharmacist) see arms;
everyone else sees the arm-neutral kit number. With masking off, everyone sees the arm.
Templates use the Jinja globals ``arm_label(patient)`` and ``may_see_arm()``."""
from __future__ import annotations

from typing import TYPE_CHECKING


from labsys.auth.roles import Permission
from labsys.i18n import gettext as _

if TYPE_CHECKING:
    from labsys.auth.models import User
    from labsys.trial.models import Patient, Trial


def trial_is_masked(trial: "Trial | None") -> bool:
    return True if trial is None else bool(trial.masked)


def may_see_arm(user: "User | None", trial: "Trial | None" = None) -> bool:
    """True when this user may see treatment arms of this trial (default: the configured trial)."""
    if trial is None:
        from labsys.trial.services import get_trial

        trial = get_trial()
    if not trial_is_masked(trial):
        return user is not None and getattr(user, "is_authenticated", True)
    return user is not None and getattr(user, "is_authenticated", True) and user.can(Permission.UNBLINDED)


def arm_name(trial: "Trial", arm: str) -> str:
    from labsys.trial.rules import ARM_MSC

    return trial.msc_arm_name if arm == ARM_MSC else trial.control_arm_name


def arm_label_for(user: "User | None", patient: "Patient") -> str:
    """The arm's name for users who may see it, otherwise the kit number."""
    if not patient.randomized:
        return _("not randomized")
    if may_see_arm(user, patient.trial):
        from labsys.trial.services import arm_of

        return arm_name(patient.trial, arm_of(patient))
    return _("Kit %(kit)s", kit=patient.kit_number)


def register_template_helpers(app) -> None:
    from flask_login import current_user

    app.jinja_env.globals["arm_label"] = lambda patient: arm_label_for(current_user, patient)
    app.jinja_env.globals["may_see_arm"] = lambda: may_see_arm(current_user)
    app.jinja_env.filters["arm_label"] = lambda patient: arm_label_for(current_user, patient)

    def ae_product_link(event):
        from labsys.trial.followup import product_link_for

        return product_link_for(current_user, event)

    app.jinja_env.globals["ae_product_link"] = ae_product_link
