"""Forms of the release feature. Values are parsed and judged by the services (one place for the
rules); the forms only carry them and show field errors."""
from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import BooleanField, DateField, DecimalField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from labsys.auth.forms import SignatureFormMixin
from labsys.i18n import lazy_gettext as _l
from labsys.release.defaults import FLOW_PANEL, MARKER_NAMES
from labsys.release.rules import CriterionKind


def apply_problems(form: FlaskForm, error) -> None:
    """Put a service's ``(field, message)`` problems on the form's fields (others on the form)."""
    problems = getattr(error, "problems", None) or [(error.field, m) for m in (error.reasons or [error.message])]
    for field_name, message in problems:
        field = getattr(form, (field_name or "").replace("-", "_"), None)
        if field is None or not hasattr(field, "errors"):
            form.form_errors.append(message)
            continue
        if not isinstance(field.errors, list):
            field.errors = list(field.errors)
        field.errors.append(message)


class ResultForm(FlaskForm):
    test_code = SelectField(_l("Test"), choices=[], render_kw={"autofocus": True})
    value = StringField(_l("Result"), validators=[Length(max=120)],
                        description=_l("A number for numeric tests; the observed text otherwise."))
    unit = StringField(_l("Unit"), validators=[Length(max=40)])
    pending = BooleanField(_l("Test started, result pending (only where the specification allows it)"))
    method = StringField(_l("Method"), validators=[Length(max=200)])
    instrument = StringField(_l("Instrument"), validators=[Length(max=120)])
    performed_by = StringField(_l("Performed by"), validators=[Length(max=200)])
    performed_on = DateField(_l("Date performed"), validators=[Optional()])
    raw_data = FileField(_l("Raw data file (optional)"))


class CorrectionForm(ResultForm):
    reason = TextAreaField(_l("Reason for the correction"), validators=[Length(max=2000)])


def _panel_form_class() -> type[FlaskForm]:
    attributes = {
        "method": StringField(_l("Method"), default="Flow cytometry", validators=[Length(max=200)]),
        "instrument": StringField(_l("Instrument"), validators=[Length(max=120)],
                                  render_kw={"autofocus": True}),
        "performed_by": StringField(_l("Performed by"), validators=[Length(max=200)]),
        "performed_on": DateField(_l("Date performed"), validators=[Optional()]),
        "raw_data": FileField(_l("Raw data file (optional, FCS export)")),
    }
    for code in FLOW_PANEL:
        attributes[f"{code.lower()}_value"] = StringField(
            _l("%(marker)s positive (%%)", marker=MARKER_NAMES[code]), validators=[Length(max=40)])
    return type("FlowPanelForm", (FlaskForm,), attributes)


FlowPanelForm = _panel_form_class()


class VerifyForm(FlaskForm):
    pass


class DecisionForm(SignatureFormMixin, FlaskForm):
    decision = HiddenField()
    expected_version = HiddenField()


class SpecDraftForm(FlaskForm):
    change_summary = TextAreaField(_l("What this version changes"), validators=[Length(max=2000)],
                                   render_kw={"autofocus": True})


class CriterionForm(FlaskForm):
    test_code = StringField(_l("Test code"), validators=[Length(max=40)], render_kw={"autofocus": True})
    name = StringField(_l("Name"), validators=[Length(max=120)])
    method = StringField(_l("Method"), validators=[Length(max=200)])
    kind = SelectField(_l("Kind"), choices=[(CriterionKind.NUMERIC.value, _l("Numeric with limits")),
                                            (CriterionKind.PASS_FAIL.value, _l("Pass / fail")),
                                            (CriterionKind.TEXT.value, _l("Text must equal"))])
    unit = StringField(_l("Unit"), validators=[Length(max=40)])
    lower_limit = DecimalField(_l("Lower limit"), validators=[Optional()])
    upper_limit = DecimalField(_l("Upper limit"), validators=[Optional()])
    expected_text = StringField(_l("Expected text"), validators=[Length(max=120)])
    may_be_pending = BooleanField(_l("May be pending at release"))


class ApproveForm(SignatureFormMixin, FlaskForm):
    pass


class SelectionForm(SignatureFormMixin, FlaskForm):
    pass
