"""Forms of the potency feature (labels through lazy gettext; validation on the server)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import MultipleFileField
from wtforms import (BooleanField, DateField, FloatField, IntegerField, SelectField, StringField, TextAreaField)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from labsys.auth.forms import SignatureFormMixin
from labsys.i18n import lazy_gettext as _l

MEASURE_CHOICES = [("activation_fraction", _l("Activation fraction")),
                   ("median_area_um2", _l("Median cell area (µm²)"))]


class RunForm(FlaskForm):
    assay_date = DateField(_l("Assay date"), validators=[InputRequired(message=_l("Enter the assay date."))],
                           render_kw={"autofocus": True})
    bv2_passage = IntegerField(_l("BV2 passage"), validators=[InputRequired(message=_l("Enter the BV2 passage.")),
                                                              NumberRange(min=0, max=200)])
    lps_lot = StringField(_l("LPS lot"), validators=[DataRequired(message=_l("Enter the LPS lot.")), Length(max=80)])
    lps_ng_per_ml = FloatField(_l("LPS concentration (ng/mL)"),
                               validators=[InputRequired(message=_l("Enter the LPS concentration.")),
                                           NumberRange(min=0.001, max=100000)])
    test_lots = TextAreaField(_l("MSC lots under test"), validators=[Optional(), Length(max=2000)],
                              description=_l("Lot identifiers separated by commas or new lines."))
    reference_lot = StringField(_l("Reference lot"), validators=[Optional(), Length(max=80)])
    plate_format = SelectField(_l("Plate format"), choices=[("24", "24"), ("48", "48"), ("96", "96")], default="96")
    parameter_set = SelectField(_l("Analysis parameter set"), choices=[])
    measure = SelectField(_l("Score measure"), choices=MEASURE_CHOICES, default="activation_fraction")
    pixel_size_um = FloatField(_l("Pixel size (µm)"), default=0.65,
                               validators=[InputRequired(message=_l("Enter the pixel size.")), NumberRange(min=0.01, max=50)])
    image_channel = IntegerField(_l("Channel to score (multichannel images)"), validators=[Optional(), NumberRange(min=0, max=15)],
                                 description=_l("Leave empty for grayscale images; 0 is the first channel."))
    min_cells_per_field = IntegerField(_l("Minimum cells per field"), default=30,
                                       validators=[InputRequired(), NumberRange(min=1, max=100000)])
    max_replicate_cv_percent = FloatField(_l("Replicate CV limit (%)"), default=20.0,
                                          validators=[InputRequired(), NumberRange(min=0.1, max=1000)])
    min_z_prime = FloatField(_l("Minimum Z′"), default=0.4, validators=[InputRequired(), NumberRange(min=-10, max=1)])
    reference_min_inhibition = FloatField(_l("Reference lot: lower control limit (percent inhibition)"),
                                          validators=[Optional()])
    reference_max_inhibition = FloatField(_l("Reference lot: upper control limit (percent inhibition)"),
                                          validators=[Optional()])
    is_validation = BooleanField(_l("Assay validation run (may calibrate a parameter set)"))
    notes = TextAreaField(_l("Notes"), validators=[Optional(), Length(max=4000)])


class UploadForm(FlaskForm):
    files = MultipleFileField(_l("Field images or a zip archive"),
                              description=_l("TIFF or PNG, 8- or 16-bit; name each file by well and field, e.g. B03_f2.tif."),
                              render_kw={"autofocus": True, "multiple": True, "accept": ".tif,.tiff,.png,.zip"})
    well = StringField(_l("Well (only for one file not named by well)"), validators=[Optional(), Length(max=4)])
    field_number = IntegerField(_l("Field number"), validators=[Optional(), NumberRange(min=1, max=999)])


class ExcludeForm(FlaskForm):
    reason = TextAreaField(_l("Reason for excluding this field"),
                           validators=[DataRequired(message=_l("A reason is required.")), Length(max=2000)])


class ActionForm(FlaskForm):
    """A button that only needs the CSRF token."""


class SignForm(SignatureFormMixin, FlaskForm):
    pass
