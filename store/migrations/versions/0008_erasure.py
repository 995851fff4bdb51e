"""erasure: what a GDPR erasure keeps (anonymous counts) and when it happened

An erased candidate's row stays as a tombstone (its id and times, no personal data) so
that the enrolments, messages and events the campaign numbers count still join on it:
`erased_at` says when, `erasure` what it cancelled (ids, positions and times only).

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# SQLite's batch mode rebuilds the table from reflection, which does not see AUTOINCREMENT.
_KEEP_IDS = {"sqlite_autoincrement": True}

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("candidates", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("erasure", sa.JSON(), nullable=True))


def downgrade() -> None:
    # The tombstones stay (their personal data is gone for good); they lose only the mark.
    with op.batch_alter_table("candidates", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_column("erasure")
        batch_op.drop_column("erased_at")
