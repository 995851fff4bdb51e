"""A candidate's record as the team sees it: notes, tasks, tags, evaluation requests,
followers, talent pools and applications, each marked automatic when an action made it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.candidates import get_candidate
from store.models import (
    Application,
    CandidateTag,
    EvaluationRequest,
    Follower,
    Job,
    Note,
    PoolMember,
    TalentPool,
    Task,
    User,
)


@dataclass(frozen=True)
class Record:
    id: int
    kind: str
    job_id: int | None
    summary: str
    move_action_id: int | None
    created_at: datetime


async def records_of(session: AsyncSession, company_id: int, candidate_id: int) -> list[Record]:
    """Everything on the candidate's record, oldest first."""
    await get_candidate(session, company_id, candidate_id)
    users = dict(
        (
            await session.execute(select(User.id, User.name).where(User.company_id == company_id))
        ).all()
    )
    records: list[Record] = []

    def add(kind: str, row: Any, summary: str, job_id: int | None = None) -> None:
        records.append(Record(row.id, kind, job_id, summary, row.move_action_id, row.created_at))

    of = candidate_id
    for note in await session.scalars(select(Note).where(Note.candidate_id == of)):
        add("note", note, note.text, note.job_id)
    for task in await session.scalars(select(Task).where(Task.candidate_id == of)):
        who = users.get(task.assignee_user_id)
        add("task", task, f"{task.title}: for {who}, due {task.due_on}", task.job_id)
    for tag in await session.scalars(select(CandidateTag).where(CandidateTag.candidate_id == of)):
        add("tag", tag, tag.tag)
    asked_of = select(EvaluationRequest).where(EvaluationRequest.candidate_id == of)
    for asked in await session.scalars(asked_of):
        add("evaluation", asked, f"evaluation asked of {users.get(asked.evaluator_user_id)}",
            asked.job_id)  # fmt: skip
    for follower in await session.scalars(select(Follower).where(Follower.candidate_id == of)):
        add("follower", follower, f"followed by {users.get(follower.user_id)}")
    pools = await session.execute(
        select(PoolMember, TalentPool.name)
        .join(TalentPool, TalentPool.id == PoolMember.pool_id)
        .where(PoolMember.candidate_id == of)
    )
    for member, name in pools:
        add("talent_pool", member, f"in talent pool '{name}'")
    applications = await session.execute(
        select(Application, Job.title)
        .join(Job, Job.id == Application.job_id)
        .where(Application.candidate_id == of, Application.company_id == company_id)
    )
    for application, title in applications:
        summary = f"applied to '{title}' ({application.source.value})"
        add("application", application, summary, application.job_id)
    return sorted(records, key=lambda r: (r.created_at, r.kind, r.id))
