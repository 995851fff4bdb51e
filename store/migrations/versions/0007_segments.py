"""candidate categories and segments: saved filters over candidates, and the jobs that
add a segment to a campaign

A candidate has a category (current applicant, past applicant, passive talent): those
with an application that is not disqualified are current applicants, those whose every
application was disqualified past applicants, the others passive talent. A segment is a
saved filter; an enrolment batch may come from one, and then holds its candidates, each
with its verdict once decided (enrolment_batch_results), and its counts.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# SQLite's batch mode rebuilds the table from reflection, which does not see AUTOINCREMENT.
_KEEP_IDS = {"sqlite_autoincrement": True}

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("candidates", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(
            sa.Column(
                "category",
                sa.Enum(
                    "current_applicant",
                    "past_applicant",
                    "passive_talent",
                    name="candidatecategory",
                    native_enum=False,
                    length=32,
                ),
                server_default="passive_talent",
                nullable=False,
            )
        )
    op.execute(
        "UPDATE candidates SET category = 'past_applicant' WHERE EXISTS "
        "(SELECT 1 FROM applications WHERE applications.candidate_id = candidates.id)"
    )
    op.execute(
        "UPDATE candidates SET category = 'current_applicant' WHERE EXISTS "
        "(SELECT 1 FROM applications WHERE applications.candidate_id = candidates.id "
        "AND applications.disqualified_at IS NULL)"
    )

    op.create_table(
        "segments",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_segments_company_id_companies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("company_id", "name", name=op.f("uq_segments_company_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_segments_company_id"), ["company_id"], unique=False)

    with op.batch_alter_table("enrolment_batches", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("segment_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("re_enrol", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        for name in ("total", "already_active", "refused"):
            batch_op.add_column(sa.Column(name, sa.Integer(), server_default="0", nullable=False))
    # A batch before this one was a list whose every candidate was decided at once; its
    # other verdicts were only in the answer.
    op.execute("UPDATE enrolment_batches SET total = added")

    op.create_table(
        "enrolment_batch_results",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=16), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["enrolment_batches.id"],
            name=op.f("fk_enrolment_batch_results_batch_id_enrolment_batches"),
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_enrolment_batch_results_company_id_companies"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolment_batch_results")),
        sa.UniqueConstraint(
            "batch_id", "candidate_id", name=op.f("uq_enrolment_batch_results_batch_id")
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("enrolment_batch_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_enrolment_batch_results_company_id"), ["company_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("enrolment_batch_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrolment_batch_results_company_id"))
    op.drop_table("enrolment_batch_results")
    with op.batch_alter_table("enrolment_batches", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        for name in ("refused", "already_active", "total", "re_enrol", "segment_id"):
            batch_op.drop_column(name)
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_segments_company_id"))
    op.drop_table("segments")
    with op.batch_alter_table("candidates", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_column("category")
