"""Trial forms. Every check that decides something is in the services; forms parse types."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (BooleanField, DateField, DateTimeLocalField, DecimalField, IntegerField, RadioField,
                     SelectField, StringField, TextAreaField)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from labsys.auth.forms import SignatureFormMixin
from labsys.i18n import lazy_gettext as _l

YES_NO_UNKNOWN = [("yes", _l("Yes")), ("no", _l("No")), ("", _l("Not yet assessed"))]


class TrialForm(FlaskForm):
    registry_number = StringField(_l("Registry number"), validators=[DataRequired(), Length(max=40)],
                                  render_kw={"autofocus": True})
    title = StringField(_l("Title"), validators=[DataRequired(), Length(max=300)])
    control_arm_name = StringField(_l("Control arm name"), validators=[DataRequired(), Length(max=120)])
    msc_arm_name = StringField(_l("Cell-therapy arm name"), validators=[DataRequired(), Length(max=120)])
    ratio_control = IntegerField(_l("Ratio: control"), default=1, validators=[InputRequired(), NumberRange(1, 9)])
    ratio_msc = IntegerField(_l("Ratio: cell therapy"), default=1, validators=[InputRequired(), NumberRange(1, 9)])
    block_sizes = StringField(_l("Block sizes"), default="2,4", validators=[DataRequired(), Length(max=40)],
                              description=_l("Comma-separated; each a multiple of the ratio's sum."))
    target_enrolment = IntegerField(_l("Target enrolment"), default=40, validators=[InputRequired(), NumberRange(2, 10000)])
    age_min = IntegerField(_l("Minimum age (years)"), default=18, validators=[InputRequired(), NumberRange(18, 120)])
    age_max = IntegerField(_l("Maximum age (years)"), default=75, validators=[InputRequired(), NumberRange(18, 120)])
    dose_cells_per_kg = IntegerField(_l("Dose (viable cells per kg)"), default=1_000_000,
                                     validators=[InputRequired(), NumberRange(1)])
    dose_tolerance = DecimalField(_l("Dose tolerance (fraction, 0.20 = ±20 %)"), default=0.20, places=3,
                                  validators=[InputRequired(), NumberRange(0.001, 0.999)])
    max_dose_cells = IntegerField(_l("Maximum dose cap (cells, optional)"), validators=[Optional(), NumberRange(1)])
    apply_post_thaw_viability = BooleanField(_l("Apply post-thaw viability to the vial count"), default=True)
    endotoxin_limit_eu_per_kg = DecimalField(_l("Endotoxin limit (EU/kg)"), default=5, places=2,
                                             validators=[InputRequired(), NumberRange(0.01, 5)])
    masked = BooleanField(_l("Masked (arms hidden from masked roles)"), default=True)
    follow_up_days = IntegerField(_l("Follow-up (days)"), default=90, validators=[InputRequired(), NumberRange(1, 3650)])
    visit_days = StringField(_l("Visit days"), default="1,3,7,14,28,90", validators=[DataRequired(), Length(max=200)],
                             description=_l("Study days, comma-separated; day 1 is the infusion."))
    exclusions = TextAreaField(_l("Exclusion criteria (one per line)"), validators=[Optional(), Length(max=5000)])


class GenerateListForm(FlaskForm):
    confirm = BooleanField(_l("I confirm the configuration is final: arms, ratio, block sizes and target freeze."),
                           validators=[DataRequired(message=_l("Confirm to generate the list."))])


def patient_form_class(exclusions: list[str], identity: bool = True):
    """The enrolment form with one question per configured exclusion criterion; without
    ``identity`` it is the screening update form (checklist, weight, and a reason)."""

    class PatientForm(FlaskForm):
        screening_number = StringField(_l("Screening number"), validators=[DataRequired(), Length(max=40)],
                                       render_kw={"autofocus": True})
        year_of_birth = IntegerField(_l("Year of birth"), validators=[Optional(), NumberRange(1900, 2100)])
        age_years = IntegerField(_l("Age (years), if the year of birth is not recorded"),
                                 validators=[Optional(), NumberRange(0, 130)])
        sex = SelectField(_l("Sex"), choices=[("female", _l("Female")), ("male", _l("Male"))],
                          validators=[DataRequired()])
        weight_kg = DecimalField(_l("Body weight (kg), measured at enrolment"), places=1,
                                 validators=[InputRequired(message=_l("Enter the body weight."))])
        weight_date = DateField(_l("Weight measured on"), validators=[InputRequired()])
        consent_date = DateField(_l("Informed consent signed on"), validators=[Optional()])
        diagnosis_confirmed = RadioField(_l("Severe viral pneumonia confirmed"), choices=YES_NO_UNKNOWN, default="",
                                         validators=[Optional()])

    if not identity:
        for name in ("screening_number", "year_of_birth", "age_years", "sex"):
            delattr(PatientForm, name)
        PatientForm.weight_kg.kwargs["render_kw"] = {"autofocus": True}
        PatientForm.reason = TextAreaField(_l("Reason for the change"), validators=[Optional(), Length(max=2000)])
    for index, item in enumerate(exclusions):
        setattr(PatientForm, f"exclusion_{index}", RadioField(item, choices=YES_NO_UNKNOWN, default="",
                                                              validators=[Optional()]))
    return PatientForm


class UnblindForm(SignatureFormMixin, FlaskForm):
    reason = TextAreaField(_l("Medical reason for emergency unblinding"),
                           validators=[DataRequired(message=_l("A reason is required.")), Length(max=2000)],
                           render_kw={"autofocus": True})


class OrderForm(FlaskForm):
    infusion_date = DateField(_l("Infusion date (study day 1)"), validators=[InputRequired()],
                              render_kw={"autofocus": True})


class CancelOrderForm(FlaskForm):
    reason = StringField(_l("Reason for cancelling"), validators=[DataRequired(message=_l("A reason is required.")),
                                                                  Length(max=2000)])


class PrepareCellsForm(SignatureFormMixin, FlaskForm):
    lot_identifier = StringField(_l("Lot identifier"), validators=[DataRequired(), Length(max=40)],
                                 render_kw={"autofocus": True})
    vial_identifiers = TextAreaField(_l("Vial identifiers (one per line)"), validators=[DataRequired()])
    viable_cells_per_vial = IntegerField(_l("Viable cells per vial (from the lot's release)"),
                                         validators=[InputRequired(), NumberRange(1)])
    post_thaw_viability = DecimalField(_l("Post-thaw viability (fraction, e.g. 0.90)"), places=3,
                                       validators=[Optional(), NumberRange(0.01, 1)])
    endotoxin_eu_per_ml = DecimalField(_l("Lot endotoxin result (EU/mL)"), places=3,
                                       validators=[InputRequired(), NumberRange(0)])
    volume_ml = DecimalField(_l("Infusion volume (mL)"), places=1, default=100,
                             validators=[InputRequired(), NumberRange(1, 1000)])


class PreparePlaceboForm(SignatureFormMixin, FlaskForm):
    placebo_identifier = StringField(_l("Placebo preparation identifier"), validators=[DataRequired(), Length(max=40)],
                                     render_kw={"autofocus": True})
    volume_ml = DecimalField(_l("Infusion volume (mL)"), places=1, default=100,
                             validators=[InputRequired(), NumberRange(1, 1000)])


class AdministerForm(SignatureFormMixin, FlaskForm):
    administered_at = DateTimeLocalField(_l("Infusion started at"), format="%Y-%m-%dT%H:%M",
                                         validators=[InputRequired()], render_kw={"autofocus": True})


class VisitForm(FlaskForm):
    status = RadioField(_l("Visit"), choices=[("done", _l("Done")), ("missed", _l("Missed"))], default="done",
                        validators=[DataRequired()])
    visit_date = DateField(_l("Visit date"), validators=[Optional()], render_kw={"autofocus": True})
    crp_mg_l = DecimalField(_l("CRP (mg/L)"), places=2, validators=[Optional()])
    il6_pg_ml = DecimalField(_l("IL-6 (pg/mL)"), places=2, validators=[Optional()])
    lymphocytes_10e9_l = DecimalField(_l("Lymphocytes (10⁹/L)"), places=2, validators=[Optional()])
    procalcitonin_ng_ml = DecimalField(_l("Procalcitonin (ng/mL)"), places=2, validators=[Optional()])
    viral_load_log10_copies_ml = DecimalField(_l("Viral load (log10 copies/mL)"), places=2, validators=[Optional()])
    pao2_fio2_mmhg = DecimalField(_l("PaO2/FiO2 (mmHg)"), places=1, validators=[Optional()])
    chest_imaging_score = IntegerField(_l("Chest imaging score"), validators=[Optional()])
    reason = TextAreaField(_l("Reason for the correction (when changing a saved visit)"),
                           validators=[Optional(), Length(max=2000)])


class OutcomeForm(FlaskForm):
    admission_date = DateField(_l("Hospital admission"), validators=[Optional()], render_kw={"autofocus": True})
    discharge_date = DateField(_l("Hospital discharge"), validators=[Optional()])
    vital_status = SelectField(_l("Vital status at day 90"),
                               choices=[("", _l("Not yet known")), ("alive", _l("Alive")), ("dead", _l("Dead")),
                                        ("unknown", _l("Lost to follow-up"))], validators=[Optional()])
    death_date = DateField(_l("Date of death"), validators=[Optional()])
    reason = TextAreaField(_l("Reason for the correction (when changing saved values)"),
                           validators=[Optional(), Length(max=2000)])


class AdverseEventForm(FlaskForm):
    term = StringField(_l("Event (term)"), validators=[DataRequired(), Length(max=200)], render_kw={"autofocus": True})
    onset_date = DateField(_l("Onset date"), validators=[InputRequired()])
    severity = SelectField(_l("Severity (CTCAE grade)"), choices=[
        ("mild", _l("1 Mild")), ("moderate", _l("2 Moderate")), ("severe", _l("3 Severe")),
        ("life_threatening", _l("4 Life-threatening")), ("fatal", _l("5 Fatal"))])
    serious = BooleanField(_l("Serious adverse event (SAE)"))
    relatedness = SelectField(_l("Relatedness to the study infusion"), choices=[
        ("unrelated", _l("Unrelated")), ("unlikely", _l("Unlikely")), ("possible", _l("Possible")),
        ("probable", _l("Probable")), ("definite", _l("Definite"))])
    description = TextAreaField(_l("Description"), validators=[Optional(), Length(max=5000)])


class ConfirmForm(FlaskForm):
    """A bare POST with CSRF (randomize)."""
