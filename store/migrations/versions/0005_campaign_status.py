"""campaign status: pause, resume and archive of a whole campaign, and the
recipient timeline's state changes

A campaign keeps its last pause, resume and its archiving. An enrolment whose touchpoint
fell due while its campaign was paused is held (`held_since`, the pause's moment) until
the resume releases it (`released_at`). `recipient_events` records each change of a
recipient's state, with ids and times only.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# SQLite's batch mode rebuilds the table from reflection, which does not see AUTOINCREMENT.
_KEEP_IDS = {"sqlite_autoincrement": True}

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recipient_events",
        sa.Column("enrolment_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "entered",
                "paused",
                "resumed",
                "held",
                "released",
                "exited",
                "completed",
                name="recipienteventkind",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_recipient_events_campaign_id_campaigns"),
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_recipient_events_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["enrolment_id"],
            ["enrolments.id"],
            name=op.f("fk_recipient_events_enrolment_id_enrolments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipient_events")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("recipient_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_recipient_events_company_id"), ["company_id"], unique=False
        )
        batch_op.create_index("ix_recipient_events_enrolment", ["enrolment_id", "id"], unique=False)
        batch_op.create_index("ix_recipient_events_campaign", ["campaign_id", "at"], unique=False)
    with op.batch_alter_table("campaigns", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resumed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("enrolments", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("held_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrolments", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_column("released_at")
        batch_op.drop_column("held_since")
    with op.batch_alter_table("campaigns", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_column("archived_at")
        batch_op.drop_column("resumed_at")
        batch_op.drop_column("paused_at")
    with op.batch_alter_table("recipient_events", schema=None) as batch_op:
        batch_op.drop_index("ix_recipient_events_campaign")
        batch_op.drop_index("ix_recipient_events_enrolment")
        batch_op.drop_index(batch_op.f("ix_recipient_events_company_id"))
    op.drop_table("recipient_events")
