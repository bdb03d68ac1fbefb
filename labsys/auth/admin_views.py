"""User administration: create, roles, deactivate, unlock, one-time passwords."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from labsys.auth import services
from labsys.auth.forms import ReasonForm, UserCreateForm, UserRolesForm
from labsys.auth.models import User, UserSession
from labsys.auth.roles import Role, allow
from labsys.errors import RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.route("/users")
@allow(Role.ADMIN)
def users():
    query = select(User).order_by(User.username)
    term = request.args.get("q", "").strip()
    if term:
        like = f"%{term.lower()}%"
        query = query.where(db.or_(db.func.lower(User.username).like(like), db.func.lower(User.full_name).like(like)))
    page = db.paginate(query, per_page=50, error_out=False)
    return render_template("admin/users.html", page=page, term=term)


@bp.route("/users/new", methods=["GET", "POST"])
@allow(Role.ADMIN)
def create_user():
    form = UserCreateForm()
    if form.validate_on_submit():
        try:
            user, password = services.create_user(services.actor_of(current_user), form.username.data,
                                                  form.full_name.data, form.roles.data)
        except RuleViolation as refused:
            form.username.errors = list(refused.reasons)
        else:
            return render_template("admin/one_time_password.html", user=user, password=password)
    return render_template("admin/user_form.html", form=form)


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@allow(Role.ADMIN)
def user_detail(user_id: int):
    user = services.get_user(user_id)
    roles_form = UserRolesForm(roles=[r.value for r in user.role_set])
    if roles_form.validate_on_submit():
        services.set_roles(services.actor_of(current_user), user, roles_form.roles.data)
        flash(_("Roles saved."), "success")
        return redirect(url_for("admin.user_detail", user_id=user.id))
    sessions = db.session.scalars(select(UserSession).where(UserSession.user_id == user.id)
                                  .order_by(UserSession.created_at.desc()).limit(10)).all()
    return render_template("admin/user_detail.html", user=user, roles_form=roles_form,
                           reason_form=ReasonForm(), sessions=sessions)


def _reasoned_action(user_id: int, action):
    user = services.get_user(user_id)
    form = ReasonForm()
    if not form.validate_on_submit():
        flash(_("A reason is required."), "danger")
        return redirect(url_for("admin.user_detail", user_id=user_id))
    try:
        result = action(services.actor_of(current_user), user, form.reason.data)
    except RuleViolation as refused:
        flash(refused.message + " " + " ".join(refused.reasons), "danger")
        return redirect(url_for("admin.user_detail", user_id=user_id))
    return user, result


@bp.route("/users/<int:user_id>/deactivate", methods=["POST"])
@allow(Role.ADMIN)
def deactivate(user_id: int):
    outcome = _reasoned_action(user_id, services.deactivate_user)
    if isinstance(outcome, tuple):
        flash(_("User deactivated; their sessions have ended."), "success")
        return redirect(url_for("admin.user_detail", user_id=user_id))
    return outcome


@bp.route("/users/<int:user_id>/reactivate", methods=["POST"])
@allow(Role.ADMIN)
def reactivate(user_id: int):
    outcome = _reasoned_action(user_id, services.reactivate_user)
    if isinstance(outcome, tuple):
        flash(_("User reactivated."), "success")
        return redirect(url_for("admin.user_detail", user_id=user_id))
    return outcome


@bp.route("/users/<int:user_id>/unlock", methods=["POST"])
@allow(Role.ADMIN)
def unlock(user_id: int):
    outcome = _reasoned_action(user_id, services.unlock_user)
    if isinstance(outcome, tuple):
        user, password = outcome
        return render_template("admin/one_time_password.html", user=user, password=password)
    return outcome


@bp.route("/users/<int:user_id>/reset-password", methods=["POST"])
@allow(Role.ADMIN)
def reset_password(user_id: int):
    outcome = _reasoned_action(user_id, services.issue_one_time_password)
    if isinstance(outcome, tuple):
        user, password = outcome
        return render_template("admin/one_time_password.html", user=user, password=password)
    return outcome
