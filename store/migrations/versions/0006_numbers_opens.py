"""campaign numbers and opens: the open-tracking setting, the opens of each message
(human or machine), and the events the numbers count

A company tracks opens only once an admin turns `open_tracking` on (off for every
company that exists). `message_opens` holds each fetch of a campaign e-mail's pixel,
human or machine (with why), its first of each kind marked. The numbers are counted from
indexes: a campaign's recipients by status, when each candidate entered, its e-mails by
touchpoint and state, its opens, and the meeting, offer and hire events of the company by
type.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# SQLite's batch mode rebuilds the table from reflection, which does not see AUTOINCREMENT.
_KEEP_IDS = {"sqlite_autoincrement": True}

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("companies", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(
            sa.Column("open_tracking", sa.Boolean(), server_default=sa.false(), nullable=False)
        )

    op.create_table(
        "message_opens",
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("first_of_kind", sa.Boolean(), nullable=False),
        sa.Column("why", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_message_opens_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_message_opens_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_message_opens_message_id_messages")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_opens")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("message_opens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_opens_company_id"), ["company_id"])
        batch_op.create_index(batch_op.f("ix_message_opens_message_id"), ["message_id"])
        batch_op.create_index(
            "ix_message_opens_numbers", ["campaign_id", "machine", "position", "first_of_kind"]
        )
        batch_op.create_index(
            "ux_message_opens_first",
            ["message_id", "machine"],
            unique=True,
            sqlite_where=sa.text("first_of_kind"),
            postgresql_where=sa.text("first_of_kind"),
        )

    op.create_index(
        "ix_enrolments_numbers", "enrolments", ["campaign_id", "status", "exit_reason", "run"]
    )
    op.create_index(
        "ix_enrolments_entries", "enrolments", ["campaign_id", "candidate_id", "entered_at"]
    )
    op.create_index(
        "ix_enrolments_company_entries",
        "enrolments",
        ["company_id", "candidate_id", "entered_at"],
    )
    op.create_index(
        "ix_messages_numbers", "messages", ["campaign_id", "source_kind", "position", "state"]
    )
    op.create_index(
        "ix_received_events_numbers",
        "received_events",
        ["company_id", "type", "candidate_id", "occurred_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_received_events_numbers", table_name="received_events")
    op.drop_index("ix_messages_numbers", table_name="messages")
    op.drop_index("ix_enrolments_company_entries", table_name="enrolments")
    op.drop_index("ix_enrolments_entries", table_name="enrolments")
    op.drop_index("ix_enrolments_numbers", table_name="enrolments")
    with op.batch_alter_table("message_opens", schema=None) as batch_op:
        batch_op.drop_index("ux_message_opens_first")
        batch_op.drop_index("ix_message_opens_numbers")
        batch_op.drop_index(batch_op.f("ix_message_opens_message_id"))
        batch_op.drop_index(batch_op.f("ix_message_opens_company_id"))
    op.drop_table("message_opens")
    with op.batch_alter_table("companies", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_column("open_tracking")
