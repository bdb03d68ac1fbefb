"""Sign-in, sign-out, own password and language."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from labsys.auth import services
from labsys.auth.forms import ApiTokenForm, ChangePasswordForm, LanguageForm, LoginForm
from labsys.auth.roles import allow_public, allow_signed_in
from labsys.errors import RuleViolation
from labsys.extensions import limiter
from labsys.i18n import gettext as _

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str | None:
    """Only same-site relative paths are followed after sign-in (no open redirect)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target


@bp.route("/login", methods=["GET", "POST"])
@allow_public
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("main.home"))
    form = LoginForm(next=request.args.get("next", ""))
    if form.validate_on_submit():
        outcome = services.login(form.username.data, form.password.data, request.remote_addr)
        if outcome.user is None:
            form.password.errors = [outcome.message]
        else:
            session.clear()  # a new session at sign-in (no fixation)
            login_user(outcome.user)
            session["locale"] = outcome.user.locale
            session.permanent = True
            if outcome.user.must_change_password:
                flash(_("Choose your own password before you continue."), "info")
                return redirect(url_for("auth.change_password"))
            return redirect(safe_next(form.next.data) or url_for("main.home"))
    return render_template("auth/login.html", form=form), 200 if request.method == "GET" or not form.errors else 401


@bp.route("/logout", methods=["POST"])
@allow_signed_in
def logout():
    services.logout(current_user, current_user.session_token)
    logout_user()
    session.clear()
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@allow_signed_in
def change_password():
    form = ChangePasswordForm()
    if form.validate_on_submit():
        try:
            services.change_password(current_user, form.current_password.data, form.new_password.data)
        except RuleViolation as refused:
            form.new_password.errors = list(refused.reasons)
        else:
            flash(_("Your password is changed."), "success")
            return redirect(url_for("main.home"))
    return render_template("auth/change_password.html", form=form)


@bp.route("/account/language", methods=["POST"])
@allow_signed_in
def set_language():
    form = LanguageForm()
    if form.validate_on_submit() and form.locale.data in current_app.config["LANGUAGES"]:
        services.set_locale(current_user, form.locale.data)
        session["locale"] = form.locale.data
    return redirect(safe_next(request.form.get("next")) or url_for("main.home"))


@bp.route("/language", methods=["POST"])
@allow_public
def set_anonymous_language():
    form = LanguageForm()
    if form.validate_on_submit() and form.locale.data in current_app.config["LANGUAGES"]:
        session["locale"] = form.locale.data
    return redirect(safe_next(request.form.get("next")) or url_for("auth.login"))


@bp.route("/account", methods=["GET", "POST"])
@allow_signed_in
def account():
    """The user's own page: language, password, and API tokens for scanners."""
    form = ApiTokenForm()
    new_secret = None
    if form.validate_on_submit():
        try:
            _, new_secret = services.create_api_token(current_user, form.name.data)
        except RuleViolation as refused:
            form.name.errors = list(refused.reasons)
        else:
            form = ApiTokenForm(formdata=None)
    return render_template("auth/account.html", form=form, tokens=services.tokens_of(current_user),
                           new_secret=new_secret)


@bp.route("/account/tokens/<int:token_id>/revoke", methods=["POST"])
@allow_signed_in
def revoke_token(token_id: int):
    services.revoke_api_token(current_user, token_id)
    flash(_("Token revoked; it no longer works."), "success")
    return redirect(url_for("auth.account"))
