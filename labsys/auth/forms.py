"""Forms for sign-in, passwords, user administration and e-signatures."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import DataRequired, EqualTo, Length, Optional, Regexp
from wtforms.widgets import CheckboxInput, ListWidget

from labsys.auth.models import SignatureMeaning
from labsys.auth.roles import ROLE_LABELS, Role
from labsys.i18n import lazy_gettext as _l


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class LoginForm(FlaskForm):
    username = StringField(_l("User ID"), validators=[DataRequired(), Length(max=64)],
                           render_kw={"autocomplete": "username", "autofocus": True})
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=256)],
                             render_kw={"autocomplete": "current-password"})
    next = HiddenField()


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField(_l("Current password"), validators=[DataRequired()],
                                      render_kw={"autocomplete": "current-password", "autofocus": True})
    new_password = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=256)],
                                 render_kw={"autocomplete": "new-password"})
    confirm = PasswordField(_l("Repeat the new password"),
                            validators=[DataRequired(), EqualTo("new_password", message=_l("The two new passwords differ."))],
                            render_kw={"autocomplete": "new-password"})


def role_choices() -> list[tuple[str, str]]:
    return [(role.value, str(ROLE_LABELS[role])) for role in Role]


class UserCreateForm(FlaskForm):
    username = StringField(_l("User ID"), validators=[
        DataRequired(), Length(min=2, max=64),
        Regexp(r"^[a-z][a-z0-9._-]+$", message=_l("Lower-case letters, digits, dot, dash or underscore, starting with a letter."))],
        render_kw={"autofocus": True})
    full_name = StringField(_l("Full name (printed on signatures)"), validators=[DataRequired(), Length(max=200)])
    roles = MultiCheckboxField(_l("Roles"), choices=role_choices,
                               validators=[DataRequired(message=_l("Give the user at least one role."))])


class UserRolesForm(FlaskForm):
    roles = MultiCheckboxField(_l("Roles"), choices=role_choices,
                               validators=[DataRequired(message=_l("Give the user at least one role."))])


class ReasonForm(FlaskForm):
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(message=_l("A reason is required.")), Length(max=2000)])


class SignatureFormMixin:
    """Fields of an e-signature (21 CFR 11.200): both components plus meaning and comment.

    Add to any form that signs; render with the ``signature_fields`` macro."""

    sign_username = StringField(_l("Your user ID"), validators=[DataRequired(message=_l("Enter your user ID to sign."))],
                                render_kw={"autocomplete": "off"})
    sign_password = PasswordField(_l("Your password"), validators=[DataRequired(message=_l("Enter your password to sign."))],
                                  render_kw={"autocomplete": "off"})
    sign_comment = TextAreaField(_l("Comment"), validators=[Optional(), Length(max=2000)])


MEANING_LABELS = {
    SignatureMeaning.AUTHORED: _l("Authored"),
    SignatureMeaning.REVIEWED: _l("Reviewed"),
    SignatureMeaning.APPROVED: _l("Approved"),
    SignatureMeaning.VERIFIED: _l("Verified"),
    SignatureMeaning.RELEASED: _l("Released"),
    SignatureMeaning.REJECTED: _l("Rejected"),
    SignatureMeaning.DISPENSED: _l("Dispensed"),
    SignatureMeaning.WITNESSED: _l("Witnessed"),
    SignatureMeaning.ADMINISTERED: _l("Administered"),
}


class SignatureForm(SignatureFormMixin, FlaskForm):
    """A stand-alone signature form where the signer picks the meaning."""

    sign_meaning = SelectField(_l("Meaning of the signature"),
                               choices=[(m.value, MEANING_LABELS[m]) for m in SignatureMeaning])


class LanguageForm(FlaskForm):
    locale = HiddenField(validators=[DataRequired()])


class ApiTokenForm(FlaskForm):
    name = StringField(_l("Where the token is used"), validators=[DataRequired(), Length(max=80)],
                       description=_l("For example: pharmacy handheld scanner 2"))
