"""one send path: messages name their source and the attempt holding them; batch keys

Messages no longer assume a campaign: `source_kind` and `source_id` say what an e-mail is
for (a campaign's touchpoint or test today, a stage action next); `campaign_id` and
`position` stay, nullable, for a campaign's e-mails. `is_test` becomes the `test` source.
`holder` names the activity attempt that may move the message on (fencing). Enrolment
batches get a random key for their workflow id.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite's batch mode rebuilds the table from reflection, which does not see AUTOINCREMENT.
_KEEP_IDS = {"sqlite_autoincrement": True}

_SOURCE = sa.Enum("touchpoint", "test", name="messagesource", native_enum=False, length=16)


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("source_kind", _SOURCE, nullable=True))
        batch_op.add_column(sa.Column("source_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("holder", sa.String(length=200), nullable=True))
    op.execute(
        "UPDATE messages SET source_id = campaign_id, "
        "source_kind = CASE WHEN is_test THEN 'test' ELSE 'touchpoint' END"
    )
    # Sends the store stopped before DATA were left `prepared` with the reason: withdrawn.
    op.execute(
        "UPDATE messages SET state = 'withdrawn' "
        "WHERE state = 'prepared' AND error LIKE 'withdrawn:%'"
    )
    with op.batch_alter_table("messages", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.alter_column("source_kind", existing_type=_SOURCE, nullable=False)
        batch_op.alter_column("source_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("campaign_id", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("position", existing_type=sa.Integer(), nullable=True)
        batch_op.drop_column("is_test")
        batch_op.create_index(batch_op.f("ix_messages_enrolment_id"), ["enrolment_id"])
    with op.batch_alter_table("enrolment_batches", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("key", sa.String(length=32), nullable=True))
    # Batches made before this revision keep their old workflow id's number as their key.
    op.execute("UPDATE enrolment_batches SET key = CAST(id AS VARCHAR(32))")
    with op.batch_alter_table("enrolment_batches", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.alter_column("key", existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_enrolment_batches_key"), ["key"])


def downgrade() -> None:
    with op.batch_alter_table("enrolment_batches", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_enrolment_batches_key"), type_="unique")
        batch_op.drop_column("key")
    with op.batch_alter_table("messages", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("is_test", sa.Boolean(), nullable=True))
    # A stage action's e-mail (no campaign) has no place in the older schema.
    op.execute("DELETE FROM messages WHERE source_kind NOT IN ('touchpoint', 'test')")
    op.execute(
        "UPDATE messages SET is_test = (source_kind = 'test'), "
        "position = COALESCE(position, 0), "
        "state = CASE WHEN state = 'withdrawn' THEN 'failed' ELSE state END"
    )
    with op.batch_alter_table("messages", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_enrolment_id"))
        batch_op.alter_column("is_test", existing_type=sa.Boolean(), nullable=False)
        batch_op.alter_column("campaign_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("position", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("holder")
        batch_op.drop_column("source_id")
        batch_op.drop_column("source_kind")
