"""pipelines: jobs, their stages and automatic actions, applications, moves, notes, tags

A company's default pipeline is its stages without a job; a job copies it when created.
A move snapshots the actions of the stage it enters (`move_actions`), each with its state.
Notes and tags name the action that wrote them, so a retried action writes nothing twice.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_jobs_company_id_companies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_company_id"), ["company_id"], unique=False)

    op.create_table(
        "stages",
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_stages_company_id_companies")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_stages_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stages")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("stages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stages_company_id"), ["company_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_stages_job_id"), ["job_id"], unique=False)

    op.create_table(
        "applications",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column(
            "source",
            sa.Enum(
                "careers_site",
                "referral",
                "sourced",
                "import",
                "forwarded_cv",
                name="applicationsource",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("entered_stage_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["candidate_id"],
            ["candidates.id"],
            name=op.f("fk_applications_candidate_id_candidates"),
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_applications_company_id_companies")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_applications_job_id_jobs")),
        sa.ForeignKeyConstraint(
            ["stage_id"], ["stages.id"], name=op.f("fk_applications_stage_id_stages")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_applications")),
        sa.UniqueConstraint("job_id", "candidate_id", name=op.f("uq_applications_job_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_applications_candidate_id"), ["candidate_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_applications_company_id"), ["company_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_applications_job_id"), ["job_id"], unique=False)

    op.create_table(
        "stage_actions",
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("email", "note", "tags", name="actionkind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("delay_hours", sa.Integer(), nullable=True),
        sa.Column("delay_days", sa.Integer(), nullable=True),
        sa.Column("at_local", sa.String(length=16), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_stage_actions_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["stage_id"],
            ["stages.id"],
            name=op.f("fk_stage_actions_stage_id_stages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_actions")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("stage_actions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stage_actions_company_id"), ["company_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_stage_actions_stage_id"), ["stage_id"], unique=False)

    op.create_table(
        "moves",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("from_stage_id", sa.Integer(), nullable=True),
        sa.Column("to_stage_id", sa.Integer(), nullable=False),
        sa.Column("moved_by_user_id", sa.Integer(), nullable=True),
        sa.Column("run_actions", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name=op.f("fk_moves_application_id_applications"),
        ),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"], name=op.f("fk_moves_candidate_id_candidates")
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_moves_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["from_stage_id"], ["stages.id"], name=op.f("fk_moves_from_stage_id_stages")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_moves_job_id_jobs")),
        sa.ForeignKeyConstraint(
            ["moved_by_user_id"], ["users.id"], name=op.f("fk_moves_moved_by_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["to_stage_id"], ["stages.id"], name=op.f("fk_moves_to_stage_id_stages")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moves")),
        sa.UniqueConstraint("key", name=op.f("uq_moves_key")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("moves", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_moves_application_id"), ["application_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_moves_candidate_id"), ["candidate_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_moves_company_id"), ["company_id"], unique=False)

    op.create_table(
        "move_actions",
        sa.Column("move_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("email", "note", "tags", name="actionkind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "done",
                "cancelled",
                "failed",
                name="actionstate",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_move_actions_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["move_id"], ["moves.id"], name=op.f("fk_move_actions_move_id_moves")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_move_actions")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("move_actions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_move_actions_company_id"), ["company_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_move_actions_move_id"), ["move_id"], unique=False)

    op.create_table(
        "candidate_tags",
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.Column("move_action_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["candidate_id"],
            ["candidates.id"],
            name=op.f("fk_candidate_tags_candidate_id_candidates"),
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_candidate_tags_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["move_action_id"],
            ["move_actions.id"],
            name=op.f("fk_candidate_tags_move_action_id_move_actions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidate_tags")),
        sa.UniqueConstraint("candidate_id", "tag", name=op.f("uq_candidate_tags_candidate_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("candidate_tags", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_candidate_tags_candidate_id"), ["candidate_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_candidate_tags_company_id"), ["company_id"], unique=False
        )

    op.create_table(
        "notes",
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author_user_id", sa.Integer(), nullable=True),
        sa.Column("move_action_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_user_id"], ["users.id"], name=op.f("fk_notes_author_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"], name=op.f("fk_notes_candidate_id_candidates")
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_notes_company_id_companies")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_notes_job_id_jobs")),
        sa.ForeignKeyConstraint(
            ["move_action_id"],
            ["move_actions.id"],
            name=op.f("fk_notes_move_action_id_move_actions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notes")),
        sa.UniqueConstraint("move_action_id", name=op.f("uq_notes_move_action_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("notes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notes_candidate_id"), ["candidate_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_notes_company_id"), ["company_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notes_company_id"))
        batch_op.drop_index(batch_op.f("ix_notes_candidate_id"))

    op.drop_table("notes")
    with op.batch_alter_table("candidate_tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_candidate_tags_company_id"))
        batch_op.drop_index(batch_op.f("ix_candidate_tags_candidate_id"))

    op.drop_table("candidate_tags")
    with op.batch_alter_table("move_actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_move_actions_move_id"))
        batch_op.drop_index(batch_op.f("ix_move_actions_company_id"))

    op.drop_table("move_actions")
    with op.batch_alter_table("moves", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_moves_company_id"))
        batch_op.drop_index(batch_op.f("ix_moves_candidate_id"))
        batch_op.drop_index(batch_op.f("ix_moves_application_id"))

    op.drop_table("moves")
    with op.batch_alter_table("stage_actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stage_actions_stage_id"))
        batch_op.drop_index(batch_op.f("ix_stage_actions_company_id"))

    op.drop_table("stage_actions")
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_applications_job_id"))
        batch_op.drop_index(batch_op.f("ix_applications_company_id"))
        batch_op.drop_index(batch_op.f("ix_applications_candidate_id"))

    op.drop_table("applications")
    with op.batch_alter_table("stages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stages_job_id"))
        batch_op.drop_index(batch_op.f("ix_stages_company_id"))

    op.drop_table("stages")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_company_id"))

    op.drop_table("jobs")
