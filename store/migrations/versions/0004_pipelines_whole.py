"""pipelines, whole: disqualification reasons, time-based rules, every kind of action's
effect, talent pools, bulk moves, and who may manage automatic actions

A stage's actions may belong to one of its rules (`rule_id`); a disqualification reason
carries actions as a stage does (`reason_id`, then no `stage_id`). A move's action keeps
its rule's days and whether a reply cancels it. Tasks, evaluation requests, followers and
pool members name the action that made them (automatic), so a retry writes nothing twice.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# SQLite's batch mode rebuilds the table from reflection, which does not see AUTOINCREMENT.
_KEEP_IDS = {"sqlite_autoincrement": True}

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "disqualification_reasons",
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_disqualification_reasons_company_id_companies"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disqualification_reasons")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("disqualification_reasons", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_disqualification_reasons_company_id"), ["company_id"], unique=False
        )

    op.create_table(
        "talent_pools",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_talent_pools_company_id_companies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_talent_pools")),
        sa.UniqueConstraint("company_id", "name", name=op.f("uq_talent_pools_company_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("talent_pools", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_talent_pools_company_id"), ["company_id"], unique=False
        )

    op.create_table(
        "bulk_moves",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=True),
        sa.Column("disqualification_reason_id", sa.Integer(), nullable=True),
        sa.Column("run_actions", sa.Boolean(), nullable=False),
        sa.Column("requested_by_user_id", sa.Integer(), nullable=True),
        sa.Column("candidate_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_bulk_moves_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["disqualification_reason_id"],
            ["disqualification_reasons.id"],
            name=op.f("fk_bulk_moves_disqualification_reason_id_disqualification_reasons"),
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_bulk_moves_job_id_jobs")),
        sa.ForeignKeyConstraint(
            ["requested_by_user_id"],
            ["users.id"],
            name=op.f("fk_bulk_moves_requested_by_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["stage_id"], ["stages.id"], name=op.f("fk_bulk_moves_stage_id_stages")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_moves")),
        sa.UniqueConstraint("key", name=op.f("uq_bulk_moves_key")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("bulk_moves", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bulk_moves_company_id"), ["company_id"], unique=False)

    op.create_table(
        "stage_rules",
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("after_days", sa.Integer(), nullable=False),
        sa.Column("unless_replied", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_stage_rules_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["stage_id"],
            ["stages.id"],
            name=op.f("fk_stage_rules_stage_id_stages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_rules")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("stage_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stage_rules_company_id"), ["company_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_stage_rules_stage_id"), ["stage_id"], unique=False)

    op.create_table(
        "bulk_move_results",
        sa.Column("bulk_move_id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("move_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["bulk_move_id"],
            ["bulk_moves.id"],
            name=op.f("fk_bulk_move_results_bulk_move_id_bulk_moves"),
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_bulk_move_results_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["move_id"], ["moves.id"], name=op.f("fk_bulk_move_results_move_id_moves")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_move_results")),
        sa.UniqueConstraint(
            "bulk_move_id", "candidate_id", name=op.f("uq_bulk_move_results_bulk_move_id")
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("bulk_move_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bulk_move_results_bulk_move_id"), ["bulk_move_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_bulk_move_results_company_id"), ["company_id"], unique=False
        )

    op.create_table(
        "candidate_followers",
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("move_action_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["candidate_id"],
            ["candidates.id"],
            name=op.f("fk_candidate_followers_candidate_id_candidates"),
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_candidate_followers_company_id_companies"),
        ),
        sa.ForeignKeyConstraint(
            ["move_action_id"],
            ["move_actions.id"],
            name=op.f("fk_candidate_followers_move_action_id_move_actions"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_candidate_followers_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidate_followers")),
        sa.UniqueConstraint(
            "candidate_id", "user_id", name=op.f("uq_candidate_followers_candidate_id")
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("candidate_followers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_candidate_followers_candidate_id"), ["candidate_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_candidate_followers_company_id"), ["company_id"], unique=False
        )

    op.create_table(
        "evaluation_requests",
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("evaluator_user_id", sa.Integer(), nullable=False),
        sa.Column("requested_by_user_id", sa.Integer(), nullable=True),
        sa.Column("move_action_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["candidate_id"],
            ["candidates.id"],
            name=op.f("fk_evaluation_requests_candidate_id_candidates"),
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_evaluation_requests_company_id_companies"),
        ),
        sa.ForeignKeyConstraint(
            ["evaluator_user_id"],
            ["users.id"],
            name=op.f("fk_evaluation_requests_evaluator_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_evaluation_requests_job_id_jobs")
        ),
        sa.ForeignKeyConstraint(
            ["move_action_id"],
            ["move_actions.id"],
            name=op.f("fk_evaluation_requests_move_action_id_move_actions"),
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_user_id"],
            ["users.id"],
            name=op.f("fk_evaluation_requests_requested_by_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_requests")),
        sa.UniqueConstraint("move_action_id", name=op.f("uq_evaluation_requests_move_action_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("evaluation_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_evaluation_requests_candidate_id"), ["candidate_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_evaluation_requests_company_id"), ["company_id"], unique=False
        )

    op.create_table(
        "talent_pool_members",
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("move_action_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["candidate_id"],
            ["candidates.id"],
            name=op.f("fk_talent_pool_members_candidate_id_candidates"),
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_talent_pool_members_company_id_companies"),
        ),
        sa.ForeignKeyConstraint(
            ["move_action_id"],
            ["move_actions.id"],
            name=op.f("fk_talent_pool_members_move_action_id_move_actions"),
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["talent_pools.id"],
            name=op.f("fk_talent_pool_members_pool_id_talent_pools"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_talent_pool_members")),
        sa.UniqueConstraint("pool_id", "candidate_id", name=op.f("uq_talent_pool_members_pool_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("talent_pool_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_talent_pool_members_candidate_id"), ["candidate_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_talent_pool_members_company_id"), ["company_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_talent_pool_members_pool_id"), ["pool_id"], unique=False
        )

    op.create_table(
        "tasks",
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("assignee_user_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("move_action_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignee_user_id"], ["users.id"], name=op.f("fk_tasks_assignee_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"], name=op.f("fk_tasks_candidate_id_candidates")
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_tasks_company_id_companies")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_tasks_job_id_jobs")),
        sa.ForeignKeyConstraint(
            ["move_action_id"],
            ["move_actions.id"],
            name=op.f("fk_tasks_move_action_id_move_actions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("move_action_id", name=op.f("uq_tasks_move_action_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tasks_candidate_id"), ["candidate_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_company_id"), ["company_id"], unique=False)

    with op.batch_alter_table("applications", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("disqualified_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("disqualification_reason_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("move_action_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_applications_disqualification_reason_id_disqualification_reasons"),
            "disqualification_reasons",
            ["disqualification_reason_id"],
            ["id"],
        )

    with op.batch_alter_table("move_actions", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("rule_after_days", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("unless_replied", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    with op.batch_alter_table("moves", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("disqualification_reason_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_moves_disqualification_reason_id_disqualification_reasons"),
            "disqualification_reasons",
            ["disqualification_reason_id"],
            ["id"],
        )

    with op.batch_alter_table("stage_actions", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("reason_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rule_id", sa.Integer(), nullable=True))
        batch_op.alter_column("stage_id", existing_type=sa.INTEGER(), nullable=True)
        batch_op.create_index(batch_op.f("ix_stage_actions_reason_id"), ["reason_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_stage_actions_rule_id"), ["rule_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_stage_actions_rule_id_stage_rules"),
            "stage_rules",
            ["rule_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_stage_actions_reason_id_disqualification_reasons"),
            "disqualification_reasons",
            ["reason_id"],
            ["id"],
            ondelete="CASCADE",
        )

    with op.batch_alter_table("users", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.add_column(
            sa.Column(
                "manages_automations", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )

    with op.batch_alter_table("companies", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        for flag in ("default_pipeline_made", "reasons_made"):
            batch_op.add_column(
                sa.Column(flag, sa.Boolean(), nullable=False, server_default=sa.false())
            )
    # A company with a default pipeline already made it.
    op.execute(
        "UPDATE companies SET default_pipeline_made = true WHERE id IN "
        "(SELECT company_id FROM stages WHERE job_id IS NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table("companies", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_column("reasons_made")
        batch_op.drop_column("default_pipeline_made")

    with op.batch_alter_table("users", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_column("manages_automations")

    # Reasons' and rules' actions have no place in 0003's stage actions.
    op.execute("DELETE FROM stage_actions WHERE stage_id IS NULL OR rule_id IS NOT NULL")

    with op.batch_alter_table("stage_actions", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_stage_actions_reason_id_disqualification_reasons"), type_="foreignkey"
        )
        batch_op.drop_constraint(
            batch_op.f("fk_stage_actions_rule_id_stage_rules"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_stage_actions_rule_id"))
        batch_op.drop_index(batch_op.f("ix_stage_actions_reason_id"))
        batch_op.alter_column("stage_id", existing_type=sa.INTEGER(), nullable=False)
        batch_op.drop_column("rule_id")
        batch_op.drop_column("reason_id")

    with op.batch_alter_table("moves", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_moves_disqualification_reason_id_disqualification_reasons"),
            type_="foreignkey",
        )
        batch_op.drop_column("disqualification_reason_id")

    with op.batch_alter_table("move_actions", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_column("unless_replied")
        batch_op.drop_column("rule_after_days")

    with op.batch_alter_table("applications", schema=None, table_kwargs=_KEEP_IDS) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_applications_disqualification_reason_id_disqualification_reasons"),
            type_="foreignkey",
        )
        batch_op.drop_column("move_action_id")
        batch_op.drop_column("disqualification_reason_id")
        batch_op.drop_column("disqualified_at")

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_company_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_candidate_id"))

    op.drop_table("tasks")
    with op.batch_alter_table("talent_pool_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_talent_pool_members_pool_id"))
        batch_op.drop_index(batch_op.f("ix_talent_pool_members_company_id"))
        batch_op.drop_index(batch_op.f("ix_talent_pool_members_candidate_id"))

    op.drop_table("talent_pool_members")
    with op.batch_alter_table("evaluation_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evaluation_requests_company_id"))
        batch_op.drop_index(batch_op.f("ix_evaluation_requests_candidate_id"))

    op.drop_table("evaluation_requests")
    with op.batch_alter_table("candidate_followers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_candidate_followers_company_id"))
        batch_op.drop_index(batch_op.f("ix_candidate_followers_candidate_id"))

    op.drop_table("candidate_followers")
    with op.batch_alter_table("bulk_move_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bulk_move_results_company_id"))
        batch_op.drop_index(batch_op.f("ix_bulk_move_results_bulk_move_id"))

    op.drop_table("bulk_move_results")
    with op.batch_alter_table("stage_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stage_rules_stage_id"))
        batch_op.drop_index(batch_op.f("ix_stage_rules_company_id"))

    op.drop_table("stage_rules")
    with op.batch_alter_table("bulk_moves", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bulk_moves_company_id"))

    op.drop_table("bulk_moves")
    with op.batch_alter_table("talent_pools", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_talent_pools_company_id"))

    op.drop_table("talent_pools")
    with op.batch_alter_table("disqualification_reasons", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_disqualification_reasons_company_id"))

    op.drop_table("disqualification_reasons")
