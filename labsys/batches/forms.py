"""Forms for donors, cords, steps, passages, verification, reagents, deviations, fill and storage.

Field validators catch impossible input early; the services check every rule again and their
problems are put back on the fields (``apply_problems``)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (BooleanField, DateField, DateTimeLocalField, DecimalField, IntegerField, SelectField,
                     SelectMultipleField, StringField, TextAreaField)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from labsys.auth.forms import SignatureFormMixin
from labsys.batches.models import DeliveryType, Inspection, StepType, TissueMethod
from labsys.batches.rules import MARKER_LABELS, MARKER_RESULT_LABELS, SCREENING_LABELS, Marker, MarkerResult, ReagentStatus
from labsys.i18n import lazy_gettext as _l

DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
REQUIRED = _l("Required.")
COUNT_RANGE = NumberRange(min=1, max=10**13, message=_l("A positive whole number of cells."))
PERCENT_RANGE = NumberRange(min=0, max=100, message=_l("Between 0 and 100 %%."))


def apply_problems(form: FlaskForm, error) -> None:
    """Put a service's ``(field, message)`` problems on the form's fields (others on the form)."""
    problems = getattr(error, "problems", None) or [(error.field, m) for m in (error.reasons or [error.message])]
    for field_name, message in problems:
        field = getattr(form, field_name or "", None)
        if field is None or not hasattr(field, "errors"):
            form.form_errors.append(message)
            continue
        if not isinstance(field.errors, list):
            field.errors = list(field.errors)
        field.errors.append(message)


def _marker_field(marker: Marker) -> SelectField:
    return SelectField(MARKER_LABELS[marker], choices=[(r.value, MARKER_RESULT_LABELS[r]) for r in MarkerResult],
                       default=MarkerResult.NOT_TESTED.value)


class DonorForm(FlaskForm):
    code = StringField(_l("Coded donor ID"), validators=[DataRequired(REQUIRED), Length(max=32)],
                       description=_l("The code only — never the mother's name."), render_kw={"autofocus": True})
    consent_date = DateField(_l("Consent date"), validators=[Optional()])
    screening_outcome = SelectField(_l("Screening questionnaire"), choices=[(k.value, v) for k, v in SCREENING_LABELS.items()])
    specimen_date = DateField(_l("Specimen sample date"), validators=[Optional()],
                              description=_l("Must be within ±7 days of cord collection."))
    hiv_ab = _marker_field(Marker.HIV_AB)
    hiv_nat = _marker_field(Marker.HIV_NAT)
    hbsag = _marker_field(Marker.HBSAG)
    anti_hbc = _marker_field(Marker.ANTI_HBC)
    hcv_ab = _marker_field(Marker.HCV_AB)
    hcv_nat = _marker_field(Marker.HCV_NAT)
    syphilis = _marker_field(Marker.SYPHILIS)
    htlv = _marker_field(Marker.HTLV)
    cmv = _marker_field(Marker.CMV)
    reason = TextAreaField(_l("Reason for the change"), validators=[Optional(), Length(max=2000)],
                           description=_l("Required when correcting a signed determination."))

    def markers(self) -> dict[Marker, str]:
        return {m: getattr(self, m.value).data for m in Marker}


class SignForm(SignatureFormMixin, FlaskForm):
    pass


class CordForm(FlaskForm):
    collected_at = DateTimeLocalField(_l("Collected at"), format=DATETIME_FORMATS, validators=[InputRequired(REQUIRED)],
                                      render_kw={"autofocus": True})
    received_at = DateTimeLocalField(_l("Received at"), format=DATETIME_FORMATS, validators=[InputRequired(REQUIRED)])
    transport_temperature_c = DecimalField(_l("Transport temperature (°C)"), places=1,
                                           validators=[InputRequired(REQUIRED), NumberRange(min=-200, max=60)])
    weight_g = DecimalField(_l("Weight (g)"), places=1, validators=[InputRequired(REQUIRED),
                                                                   NumberRange(min=0.1, max=5000, message=_l("The weight must be positive."))])
    inspection = SelectField(_l("Visual inspection"), choices=[(Inspection.CONFORMS.value, _l("Conforms")),
                                                               (Inspection.DOES_NOT_CONFORM.value, _l("Does not conform"))])
    inspection_note = TextAreaField(_l("Inspection note"), validators=[Optional(), Length(max=2000)])
    delivery_type = SelectField(_l("Delivery"), choices=[(DeliveryType.VAGINAL.value, _l("Vaginal")),
                                                         (DeliveryType.CAESAREAN.value, _l("Caesarean"))])
    gestational_age_weeks = IntegerField(_l("Gestational age (weeks)"), validators=[
        InputRequired(REQUIRED), NumberRange(min=20, max=45, message=_l("20 to 45 weeks."))])
    accept_under_deviation = BooleanField(_l("Accept outside limits under a deviation (QA must close it)"))
    deviation_description = TextAreaField(_l("Deviation description"), validators=[Optional(), Length(max=4000)])


class StepForm(FlaskForm):
    step_type = SelectField(_l("Step"), choices=[(StepType.TISSUE_PROCESSING.value, _l("Tissue processing")),
                                                 (StepType.HARVEST.value, _l("Harvest")),
                                                 (StepType.FORMULATION.value, _l("Formulation"))],
                            render_kw={"autofocus": True})
    method = SelectField(_l("Tissue method"), choices=[("", "—"), (TissueMethod.EXPLANT.value, _l("Explant")),
                                                       (TissueMethod.ENZYMATIC.value, _l("Enzymatic"))],
                         validators=[Optional()])
    started_at = DateTimeLocalField(_l("Started at"), format=DATETIME_FORMATS, validators=[InputRequired(REQUIRED)])
    ended_at = DateTimeLocalField(_l("Ended at"), format=DATETIME_FORMATS, validators=[Optional()])
    equipment = StringField(_l("Equipment (IDs)"), validators=[DataRequired(REQUIRED), Length(max=200)])
    reagent_ids = SelectMultipleField(_l("Reagent lots used"), coerce=int, validate_choice=False,
                                      description=_l("Only released, in-date lots are listed."))
    notes = TextAreaField(_l("Notes"), validators=[Optional(), Length(max=4000)])


class PassageForm(FlaskForm):
    passage_number = IntegerField(_l("Passage number (0 = P0)"), validators=[InputRequired(REQUIRED)],
                                  render_kw={"autofocus": True})
    started_at = DateTimeLocalField(_l("Started at"), format=DATETIME_FORMATS, validators=[InputRequired(REQUIRED)])
    ended_at = DateTimeLocalField(_l("Harvested at"), format=DATETIME_FORMATS, validators=[InputRequired(REQUIRED)])
    equipment = StringField(_l("Equipment (IDs)"), validators=[DataRequired(REQUIRED), Length(max=200)])
    seeded_viable_cells = IntegerField(_l("Viable cells seeded"), validators=[Optional(), COUNT_RANGE],
                                       description=_l("May be empty for an explant P0."))
    harvested_viable_cells = IntegerField(_l("Viable cells harvested"), validators=[InputRequired(REQUIRED), COUNT_RANGE])
    viability_percent = DecimalField(_l("Viability (%)"), places=2, validators=[InputRequired(REQUIRED), PERCENT_RANGE])
    confluence_percent = DecimalField(_l("Confluence (%)"), places=1, validators=[Optional(), PERCENT_RANGE])
    flask_count = IntegerField(_l("Flasks"), validators=[InputRequired(REQUIRED), NumberRange(min=1, max=1000)])
    reagent_ids = SelectMultipleField(_l("Reagent lots used"), coerce=int, validate_choice=False)
    notes = TextAreaField(_l("Notes"), validators=[Optional(), Length(max=4000)])


class PassageCorrectionForm(FlaskForm):
    seeded_viable_cells = IntegerField(_l("Viable cells seeded"), validators=[Optional(), COUNT_RANGE],
                                       render_kw={"autofocus": True})
    harvested_viable_cells = IntegerField(_l("Viable cells harvested"), validators=[InputRequired(REQUIRED), COUNT_RANGE])
    viability_percent = DecimalField(_l("Viability (%)"), places=2, validators=[InputRequired(REQUIRED), PERCENT_RANGE])
    confluence_percent = DecimalField(_l("Confluence (%)"), places=1, validators=[Optional(), PERCENT_RANGE])
    flask_count = IntegerField(_l("Flasks"), validators=[InputRequired(REQUIRED), NumberRange(min=1, max=1000)])
    reason = TextAreaField(_l("Reason for the correction"), validators=[DataRequired(_l("A reason is required.")),
                                                                        Length(max=2000)])


class VerifyPassageForm(SignatureFormMixin, FlaskForm):
    harvested_viable_cells = IntegerField(_l("Viable cells harvested (re-enter from the source record)"),
                                          validators=[InputRequired(REQUIRED), COUNT_RANGE], render_kw={"autofocus": True})
    viability_percent = DecimalField(_l("Viability % (re-enter)"), places=2,
                                     validators=[InputRequired(REQUIRED), PERCENT_RANGE])


class VerifyFillForm(SignatureFormMixin, FlaskForm):
    viable_cells_per_vial = IntegerField(_l("Viable cells per vial (re-enter from the source record)"),
                                         validators=[InputRequired(REQUIRED), COUNT_RANGE], render_kw={"autofocus": True})
    viability_percent = DecimalField(_l("Viability at fill % (re-enter)"), places=2,
                                     validators=[InputRequired(REQUIRED), PERCENT_RANGE])


class ReagentForm(FlaskForm):
    item = StringField(_l("Item"), validators=[DataRequired(REQUIRED), Length(max=120)], render_kw={"autofocus": True})
    lot = StringField(_l("Lot"), validators=[DataRequired(REQUIRED), Length(max=60)])
    supplier = StringField(_l("Supplier"), validators=[Optional(), Length(max=120)])
    expiry_date = DateField(_l("Expiry date"), validators=[InputRequired(REQUIRED)])
    received_on = DateField(_l("Received on"), validators=[InputRequired(REQUIRED)])


class ReagentStatusForm(FlaskForm):
    status = SelectField(_l("Decision"), choices=[(ReagentStatus.RELEASED.value, _l("Release")),
                                                  (ReagentStatus.REJECTED.value, _l("Reject"))])
    reason = TextAreaField(_l("Reason"), validators=[Optional(), Length(max=2000)])


class DeviationForm(FlaskForm):
    description = TextAreaField(_l("What happened"), validators=[DataRequired(REQUIRED), Length(max=4000)],
                                render_kw={"autofocus": True})


class AssessmentForm(FlaskForm):
    impact_assessment = TextAreaField(_l("Impact assessment"), validators=[DataRequired(REQUIRED), Length(max=4000)])
    capa = TextAreaField(_l("CAPA (corrective and preventive action)"), validators=[DataRequired(REQUIRED), Length(max=4000)])


class FillForm(FlaskForm):
    vial_count = IntegerField(_l("Number of vials"), validators=[InputRequired(REQUIRED), NumberRange(min=1, max=999)],
                              render_kw={"autofocus": True})
    viable_cells_per_vial = IntegerField(_l("Viable cells per vial"), validators=[InputRequired(REQUIRED), COUNT_RANGE])
    volume_ml = DecimalField(_l("Volume per vial (mL)"), places=2,
                             validators=[InputRequired(REQUIRED), NumberRange(min=0.01, max=1000)])
    cryoprotectant = StringField(_l("Cryoprotectant"), default="10% DMSO",
                                 validators=[DataRequired(REQUIRED), Length(max=120)])
    viability_percent = DecimalField(_l("Viability at fill (%)"), places=2, validators=[InputRequired(REQUIRED), PERCENT_RANGE])
    started_at = DateTimeLocalField(_l("Fill started at"), format=DATETIME_FORMATS, validators=[InputRequired(REQUIRED)])
    filled_at = DateTimeLocalField(_l("Fill finished at"), format=DATETIME_FORMATS, validators=[InputRequired(REQUIRED)])
    equipment = StringField(_l("Equipment (IDs)"), validators=[DataRequired(REQUIRED), Length(max=200)])
    reagent_ids = SelectMultipleField(_l("Reagent lots used"), coerce=int, validate_choice=False)


class TankForm(FlaskForm):
    code = StringField(_l("Tank code"), validators=[DataRequired(REQUIRED), Length(max=20)])
    description = StringField(_l("Description"), validators=[Optional(), Length(max=200)])


class RackForm(FlaskForm):
    tank_id = SelectField(_l("Tank"), coerce=int)
    code = StringField(_l("Rack code"), validators=[DataRequired(REQUIRED), Length(max=20)])


class BoxForm(FlaskForm):
    rack_id = SelectField(_l("Rack"), coerce=int)
    code = StringField(_l("Box code"), validators=[DataRequired(REQUIRED), Length(max=20)])
    rows = IntegerField(_l("Rows"), default=9, validators=[InputRequired(REQUIRED), NumberRange(min=1, max=26)])
    columns = IntegerField(_l("Columns"), default=9, validators=[InputRequired(REQUIRED), NumberRange(min=1, max=26)])


class StoreVialForm(FlaskForm):
    box_id = SelectField(_l("Box"), coerce=int, render_kw={"autofocus": True})
    row = IntegerField(_l("Row (1 = A)"), validators=[InputRequired(REQUIRED), NumberRange(min=1, max=26)])
    column = IntegerField(_l("Column"), validators=[InputRequired(REQUIRED), NumberRange(min=1, max=26)])
    note = TextAreaField(_l("Reason / note"), validators=[Optional(), Length(max=2000)])


class StoreBatchForm(FlaskForm):
    box_id = SelectField(_l("Box"), coerce=int)


class ReprintForm(FlaskForm):
    reason = TextAreaField(_l("Reason for the reprint"), validators=[Optional(), Length(max=2000)])


class VialStatusForm(FlaskForm):
    status = SelectField(_l("New state"))
    reason = TextAreaField(_l("Reason"), validators=[Optional(), Length(max=2000)])
