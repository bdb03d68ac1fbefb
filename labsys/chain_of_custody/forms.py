from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, HiddenField, PasswordField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from labsys.auth.forms import SignatureFormMixin


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
