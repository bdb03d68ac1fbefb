"""user roles are revoked, never deleted

Revision ID: a7d3e5f1c2b9
Revises: 7c3e9a14b2d5 (performance indexes)
Create Date: 2026-11-25 15:55:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a7d3e5f1c2b9'
down_revision = '7c3e9a14b2d5'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('user_roles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('user_roles', schema=None) as batch_op:
        batch_op.drop_column('revoked_at')
