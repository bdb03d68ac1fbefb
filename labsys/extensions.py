"""Flask extensions, created unbound; ``create_app`` binds them."""
from __future__ import annotations

from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as FlaskSession
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.engine import Engine

from labsys.db import Base, read_engine, refuse_changes_outside_write_transactions


class Session(FlaskSession):
    """Flask-SQLAlchemy's session, reading through ``labsys.db.read_engine`` (on PostgreSQL
    without a transaction; ``labsys.db.write_transaction`` opens one to write)."""

    def get_bind(self, mapper=None, clause=None, bind=None, **kwargs):
        found = super().get_bind(mapper=mapper, clause=clause, bind=bind, **kwargs)
        return read_engine(found) if isinstance(found, Engine) else found


event.listen(Session, "before_flush", refuse_changes_outside_write_transactions)
db = SQLAlchemy(model_class=Base, session_options={"class_": Session})
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])
babel = Babel()
