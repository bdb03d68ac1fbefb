from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import DateTimeLocalField, DecimalField, HiddenField, PasswordField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, Optional

from labsys.auth.forms import SignatureFormMixin
from labsys.i18n import lazy_gettext as _l


class AllocateForm(FlaskForm):
    vials = HiddenField()


class CancelAllocationForm(FlaskForm):
    reason = TextAreaField(_l("Reason for cancelling"), validators=[DataRequired(message=_l("State the reason.")),
                                                                    Length(max=2000)])


class ThawForm(FlaskForm):
    temperature_c = StringField(_l("Water-bath temperature (°C)"), validators=[Optional(), Length(max=12)])
    note = StringField(_l("Note"), validators=[Optional(), Length(max=500)])


class DispenseForm(SignatureFormMixin, FlaskForm):
    patient = HiddenField()
    vials = HiddenField()
    witness_username = StringField(_l("Witness user ID"),
                                   validators=[DataRequired(message=_l("The witness enters their user ID."))],
                                   render_kw={"autocomplete": "off"})
    witness_password = PasswordField(_l("Witness password"),
                                     validators=[DataRequired(message=_l("The witness enters their password."))],
                                     render_kw={"autocomplete": "off"})


class AdministerForm(SignatureFormMixin, FlaskForm):
    wristband = StringField(_l("Scan the wristband"), validators=[Optional(), Length(max=400)],
                            render_kw={"autofocus": True, "autocomplete": "off"})
    vials = TextAreaField(_l("Scan each vial (one code a line)"), validators=[Optional(), Length(max=20000)])
    override_reason = TextAreaField(_l("Override reason (only when a scan is impossible)"),
                                    validators=[Optional(), Length(max=2000)])
    infusion_start = DateTimeLocalField(_l("Infusion started at"), format="%Y-%m-%dT%H:%M",
                                        validators=[DataRequired(message=_l("Enter the start time."))])
    infusion_stop = DateTimeLocalField(_l("Infusion stopped at"), format="%Y-%m-%dT%H:%M",
                                       validators=[DataRequired(message=_l("Enter the stop time."))])


class ShipForm(FlaskForm):
    vials = TextAreaField(_l("Vials (one identifier or scanned code a line)"),
                          validators=[DataRequired(message=_l("List at least one vial.")), Length(max=20000)],
                          render_kw={"autofocus": True})
    shipper = StringField(_l("Shipper"), validators=[DataRequired(message=_l("Name the shipper.")), Length(max=200)])
    destination = StringField(_l("Destination"), default="Hospital pharmacy",
                              validators=[DataRequired(message=_l("Name the destination.")), Length(max=120)])
    min_temperature_c = DecimalField(_l("Lowest allowed temperature (°C)"), default=-196,
                                     validators=[InputRequired(message=_l("Enter a temperature."))])
    max_temperature_c = DecimalField(_l("Highest allowed temperature (°C)"), default=-150,
                                     validators=[InputRequired(message=_l("Enter a temperature."))])


class ReadingsForm(FlaskForm):
    log = TextAreaField(_l("Temperature log (CSV: time,temperature_c)"), validators=[Optional(), Length(max=500000)])
    log_file = FileField(_l("or upload a CSV file"))


class ReceiveForm(FlaskForm):
    scans = TextAreaField(_l("Scan every vial received (one code a line)"), validators=[Optional(), Length(max=20000)])
    note = TextAreaField(_l("Receipt note"), validators=[Optional(), Length(max=2000)])
