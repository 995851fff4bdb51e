"""The tables: companies and their people, candidates, campaigns, enrolments, messages,
events, and pipelines: jobs, stages, their actions, applications, moves and what the
actions made."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every database (SQLite forgets the zone, so we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# An id once given by a committed row is never given again on SQLite either (AUTOINCREMENT).
# One given by a transaction that rolled back can be: SQLite's sqlite_sequence rolls back
# with it, unlike PostgreSQL's sequences. So no workflow id is built from an id that is
# handed out before the commit of the transaction that makes it (see EnrolmentBatch.key).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def table(model: type[Base]) -> Table:
    """A model's table, for the Core statements of hot paths (built once, bound per call:
    no entities to load, track or flush)."""
    return cast(Table, model.__table__)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[str]: JSON,
        list[int]: JSON,
    }


class CompanyOwned(Base):
    """Every record but the company itself belongs to one company, by an indexed column."""

    __abstract__ = True
    __table_args__: Any = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"), index=True)


class Role(enum.StrEnum):
    ADMIN = "admin"
    RECRUITER = "recruiter"
    SERVICE = "service"


class Format(enum.StrEnum):
    PLAIN = "plain"
    BRANDED = "branded"


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class ExitOption(enum.StrEnum):
    APPLIED = "applied"
    REPLIED = "replied"
    CONNECTED = "connected"


class RecipientStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    EXITED = "exited"


class MessageState(enum.StrEnum):
    """A message's life (activities/sending.py moves it, each step a compare-and-set on
    the state and the attempt holding it): prepared before SMTP; sending from the moment
    the peer holds the whole content and only the final dot is left; sent after the
    peer's 250. It ends unconfirmed when it may or may not have reached the peer (the RFC
    1047 window), failed when it cannot, withdrawn when the store said stop first."""

    PREPARED = "prepared"
    SENDING = "sending"
    SENT = "sent"
    UNCONFIRMED = "unconfirmed"
    FAILED = "failed"
    WITHDRAWN = "withdrawn"


class MessageSource(enum.StrEnum):
    """What an e-mail is for: it names the row `source_id` points at."""

    # A campaign's touchpoint to a recipient; source_id is the campaign.
    TOUCHPOINT = "touchpoint"
    # A campaign's touchpoint to a test address; source_id is the campaign.
    TEST = "test"
    # A stage move's e-mail action; source_id is the move action.
    STAGE_ACTION = "stage_action"


class ActionKind(enum.StrEnum):
    """What an automatic action of a stage does."""

    EMAIL = "email"
    NOTE = "note"
    TASK = "task"
    TAGS = "tags"
    EVALUATION = "evaluation"
    FOLLOWERS = "followers"
    ASSIGN = "assign"


class ActionState(enum.StrEnum):
    """A move's action: pending until it runs (or its moment comes), then done or failed;
    cancelled (with why) when its move was cancelled or superseded before it ran."""

    PENDING = "pending"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


class ApplicationSource(enum.StrEnum):
    """Where an application came from: an import and a CV forwarded to the job's mailbox
    trigger nothing."""

    CAREERS_SITE = "careers_site"
    REFERRAL = "referral"
    SOURCED = "sourced"
    IMPORT = "import"
    FORWARDED_CV = "forwarded_cv"
    # Assigned to the job by another job's automatic action: it triggers nothing either.
    ASSIGNED = "assigned"


class CandidateCategory(enum.StrEnum):
    """What a candidate is to the company, as a CRM files a prospect (seed 001): a current
    applicant (applied, still in the running), a past applicant kept in the talent pool
    (applied, not retained that time), or passive talent (never applied: sourced, met,
    referred). Segments select by it, so that each gets the campaigns that fit."""

    CURRENT_APPLICANT = "current_applicant"
    PAST_APPLICANT = "past_applicant"
    PASSIVE_TALENT = "passive_talent"


def _enum(cls: type[enum.StrEnum], length: int = 16) -> Enum:
    return Enum(
        cls, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e]
    )


class Company(Base):
    __tablename__ = "companies"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    time_zone: Mapped[str] = mapped_column(String(64))
    campaigns_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    brand_name: Mapped[str | None] = mapped_column(String(200))
    brand_logo_url: Mapped[str | None] = mapped_column(String(2000))
    brand_primary_color: Mapped[str] = mapped_column(String(7), default="#1f2937")
    brand_accent_color: Mapped[str] = mapped_column(String(7), default="#2563eb")
    # The custom candidate fields templates may name, declared once per company.
    custom_fields: Mapped[list[str]] = mapped_column(default=list)
    # The ready examples were made (once, by whichever request claimed them first): a
    # company that then removes them does not get them back.
    default_pipeline_made: Mapped[bool] = mapped_column(Boolean, default=False)
    reasons_made: Mapped[bool] = mapped_column(Boolean, default=False)
    # Campaign e-mails carry an open-tracking pixel: off until an admin turns it on, since
    # ePrivacy (and the EDPB) treat the pixel as needing the candidate's consent.
    open_tracking: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(CompanyOwned):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("company_id", "email"), NEVER_REUSE_IDS)

    role: Mapped[Role] = mapped_column(_enum(Role))
    name: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(320))
    # Besides admins, the users who may configure pipelines' automatic actions.
    manages_automations: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(CompanyOwned):
    """A key is stored as its SHA-256 only: keys are long random strings, never shown twice."""

    __tablename__ = "api_keys"

    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    role: Mapped[Role] = mapped_column(_enum(Role))
    label: Mapped[str] = mapped_column(String(200), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class Candidate(CompanyOwned):
    __tablename__ = "candidates"

    first_name: Mapped[str] = mapped_column(String(200))
    last_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(320))
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    consent_given_at: Mapped[datetime | None] = mapped_column()
    consent_method: Mapped[str | None] = mapped_column(String(200))
    consent_source: Mapped[str | None] = mapped_column(String(200))
    unsubscribed_at: Mapped[datetime | None] = mapped_column()
    # One who has not applied is passive talent until the ATS says otherwise.
    category: Mapped[CandidateCategory] = mapped_column(
        _enum(CandidateCategory, length=32),
        default=CandidateCategory.PASSIVE_TALENT,
        server_default=CandidateCategory.PASSIVE_TALENT.value,
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Erased (GDPR, store/erasure.py): the row stays as an anonymous tombstone, its id
    # and times only, so that what the numbers count still joins on it; `erasure` is what
    # the erasure cancelled (ids, positions and times), answered again on a repeat.
    erased_at: Mapped[datetime | None] = mapped_column()
    erasure: Mapped[dict[str, Any] | None] = mapped_column()


class Campaign(CompanyOwned):
    __tablename__ = "campaigns"

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[CampaignStatus] = mapped_column(
        _enum(CampaignStatus), default=CampaignStatus.DRAFT
    )
    exit_options: Mapped[list[str]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    saved_at: Mapped[datetime | None] = mapped_column()
    # The last pause and resume of the whole campaign, and its archiving.
    paused_at: Mapped[datetime | None] = mapped_column()
    resumed_at: Mapped[datetime | None] = mapped_column()
    archived_at: Mapped[datetime | None] = mapped_column()


class Touchpoint(CompanyOwned):
    """One e-mail of a campaign; `interval_days` is the wait after the previous one."""

    __tablename__ = "touchpoints"
    __table_args__ = (UniqueConstraint("campaign_id", "position"), NEVER_REUSE_IDS)

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    interval_days: Mapped[int] = mapped_column(Integer, default=0)
    send_hour: Mapped[int] = mapped_column(Integer)
    send_minute: Mapped[int] = mapped_column(Integer)
    sender_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    format: Mapped[Format] = mapped_column(_enum(Format))
    subject: Mapped[str] = mapped_column(String(998))
    body: Mapped[str] = mapped_column(Text)


class Enrolment(CompanyOwned):
    """A candidate's place in a campaign (a recipient). `run` counts enrolments, so a
    re-enrolled candidate's sends get new idempotency keys."""

    __tablename__ = "enrolments"
    __table_args__ = (UniqueConstraint("campaign_id", "candidate_id"), NEVER_REUSE_IDS)

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    run: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[RecipientStatus] = mapped_column(_enum(RecipientStatus))
    exit_reason: Mapped[str | None] = mapped_column(String(32))
    entered_at: Mapped[datetime] = mapped_column()
    left_at: Mapped[datetime | None] = mapped_column()
    paused_at: Mapped[datetime | None] = mapped_column()
    resumed_at: Mapped[datetime | None] = mapped_column()
    next_position: Mapped[int | None] = mapped_column(Integer)
    next_send_at: Mapped[datetime | None] = mapped_column()
    # Null until the workflow is started: bulk enrolment starts them at a pace.
    workflow_started_at: Mapped[datetime | None] = mapped_column()
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("enrolment_batches.id"), index=True)
    # A touchpoint fell due while the campaign was paused (the pause's `paused_at`): the
    # workflow waits for the campaign's resume, which sets `released_at`.
    held_since: Mapped[datetime | None] = mapped_column()
    released_at: Mapped[datetime | None] = mapped_column()


class EnrolmentBatch(CompanyOwned):
    """A bulk add whose workflows are started in the background, paced. Its workflow id
    is built from `key`, random, since a rolled-back id can be handed out again."""

    __tablename__ = "enrolment_batches"

    key: Mapped[str] = mapped_column(String(32), unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    added: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    # A segment's batch: the segment it took its candidates from (no foreign key: the
    # batch keeps its candidates, EnrolmentBatchResult, when the segment changes or goes)
    # and whether it enrols again those who left. Its activity decides each candidate.
    segment_id: Mapped[int | None] = mapped_column(Integer)
    re_enrol: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Candidates in the batch, and the verdicts so far (with `added`).
    total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    already_active: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refused: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Message(CompanyOwned):
    """One e-mail. The idempotency key is written before SMTP; the Message-ID derives from it."""

    __tablename__ = "messages"

    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    message_id: Mapped[str] = mapped_column(String(255))
    source_kind: Mapped[MessageSource] = mapped_column(_enum(MessageSource))
    source_id: Mapped[int] = mapped_column(Integer)
    # A campaign's e-mails name it and their touchpoint, for its numbers and its tests.
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"), index=True)
    position: Mapped[int | None] = mapped_column(Integer)
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"), index=True)
    enrolment_id: Mapped[int | None] = mapped_column(ForeignKey("enrolments.id"), index=True)
    # Only test sends name their address here; a real send goes to the candidate's.
    test_address: Mapped[str | None] = mapped_column(String(320))
    state: Mapped[MessageState] = mapped_column(_enum(MessageState))
    # The activity attempt that holds the message: only it may move it on (fencing).
    holder: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    scheduled_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()


class ReceivedEvent(CompanyOwned):
    """An event from a backend service, recorded once by its id, with the answer it got."""

    __tablename__ = "received_events"
    __table_args__ = (UniqueConstraint("company_id", "event_id"), NEVER_REUSE_IDS)

    event_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(32))
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    occurred_at: Mapped[datetime] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What ended: {"ended": [[campaign_id, run], ...]}, signalled again when it repeats.
    ended: Mapped[dict[str, Any]] = mapped_column(default=dict)


class IdempotentRequest(CompanyOwned):
    """The first answer to a write that carried an Idempotency-Key, replayed on repeats."""

    __tablename__ = "idempotent_requests"
    __table_args__ = (UniqueConstraint("company_id", "key"), NEVER_REUSE_IDS)

    key: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(CompanyOwned):
    """A job, with a pipeline of its own: the company's default as it was at creation."""

    __tablename__ = "jobs"

    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Stage(CompanyOwned):
    """One stage of a pipeline: a job's (`job_id`), or the company's default (no job).
    The first (position 0) is where applications enter."""

    __tablename__ = "stages"

    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))


class DisqualificationReason(CompanyOwned):
    """One of the company's reasons to disqualify a candidate, which can carry actions."""

    __tablename__ = "disqualification_reasons"

    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))


class StageRule(CompanyOwned):
    """A time-based rule of a stage: if the candidate is still in the stage `after_days`
    days after entering it (and, with `unless_replied`, has not replied since), its
    actions run. A move out of the stage cancels it, as it cancels any pending action."""

    __tablename__ = "stage_rules"

    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    after_days: Mapped[int] = mapped_column(Integer)
    unless_replied: Mapped[bool] = mapped_column(Boolean)


class StageAction(CompanyOwned):
    """An automatic action of a stage (`rule_id`: of one of its rules) or of a
    disqualification reason. When it runs, counted from the move: at once (no delay),
    `delay_hours` later, `delay_days` later at the same local time, or at the local date
    and time `at_local` (YYYY-MM-DDTHH:MM, the company's zone); a rule's, when it fires."""

    __tablename__ = "stage_actions"

    stage_id: Mapped[int | None] = mapped_column(
        ForeignKey("stages.id", ondelete="CASCADE"), index=True
    )
    reason_id: Mapped[int | None] = mapped_column(
        ForeignKey("disqualification_reasons.id", ondelete="CASCADE"), index=True
    )
    rule_id: Mapped[int | None] = mapped_column(
        ForeignKey("stage_rules.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[ActionKind] = mapped_column(_enum(ActionKind))
    delay_hours: Mapped[int | None] = mapped_column(Integer)
    delay_days: Mapped[int | None] = mapped_column(Integer)
    at_local: Mapped[str | None] = mapped_column(String(16))
    # What the kind needs: an e-mail's subject, body, format and sender (a user id, or
    # none for the user who moves the candidate); a note's text; a task's title, assignee
    # and due day; the tags; the evaluator; the followers; the job or talent pool.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Application(CompanyOwned):
    """A candidate in a job's pipeline, in one stage."""

    __tablename__ = "applications"
    __table_args__ = (UniqueConstraint("job_id", "candidate_id"), NEVER_REUSE_IDS)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    source: Mapped[ApplicationSource] = mapped_column(_enum(ApplicationSource))
    entered_stage_at: Mapped[datetime] = mapped_column()
    # Disqualified (still in its stage) with this reason; a move into a stage requalifies.
    disqualified_at: Mapped[datetime | None] = mapped_column()
    disqualification_reason_id: Mapped[int | None] = mapped_column(
        ForeignKey("disqualification_reasons.id")
    )
    # The action that assigned the candidate to this job, if one did (automatic). No
    # foreign key: move_actions -> moves -> applications would make a cycle.
    move_action_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Move(CompanyOwned):
    """A candidate moved into a stage (an application entering the first one included).
    Its workflow id is built from `key`, random, since a rolled-back id can be handed out
    again (SQLite)."""

    __tablename__ = "moves"

    key: Mapped[str] = mapped_column(String(32), unique=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    from_stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id"))
    to_stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    moved_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # A disqualification: the candidate stays in `to_stage_id`, disqualified for this.
    disqualification_reason_id: Mapped[int | None] = mapped_column(
        ForeignKey("disqualification_reasons.id")
    )
    run_actions: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column()


class MoveAction(CompanyOwned):
    """One action of a move, as the stage carried it at the move (later edits of the
    stage do not change it), with its state."""

    __tablename__ = "move_actions"

    move_id: Mapped[int] = mapped_column(ForeignKey("moves.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[ActionKind] = mapped_column(_enum(ActionKind))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    due_at: Mapped[datetime] = mapped_column()
    # A rule's action: the rule's days, and whether a reply since the move cancels it.
    rule_after_days: Mapped[int | None] = mapped_column(Integer)
    unless_replied: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[ActionState] = mapped_column(_enum(ActionState))
    # Why it was cancelled, or the error it failed with.
    reason: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column()


class Note(CompanyOwned):
    """A note on a candidate for the team; an automatic one has no author."""

    __tablename__ = "notes"

    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    text: Mapped[str] = mapped_column(Text)
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # The action that wrote it, once: a retried action finds it written.
    move_action_id: Mapped[int | None] = mapped_column(ForeignKey("move_actions.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CandidateTag(CompanyOwned):
    """A tag on a candidate; `move_action_id` names the action that added it, if one did."""

    __tablename__ = "candidate_tags"
    __table_args__ = (UniqueConstraint("candidate_id", "tag"), NEVER_REUSE_IDS)

    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    tag: Mapped[str] = mapped_column(String(100))
    move_action_id: Mapped[int | None] = mapped_column(ForeignKey("move_actions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Task(CompanyOwned):
    """A task for a teammate about a candidate; an automatic one names its action."""

    __tablename__ = "tasks"

    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    assignee_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(200))
    due_on: Mapped[date] = mapped_column(Date)
    move_action_id: Mapped[int | None] = mapped_column(ForeignKey("move_actions.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvaluationRequest(CompanyOwned):
    """A teammate asked to evaluate a candidate; an automatic request has no author."""

    __tablename__ = "evaluation_requests"

    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    evaluator_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    requested_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    move_action_id: Mapped[int | None] = mapped_column(ForeignKey("move_actions.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Follower(CompanyOwned):
    """A teammate following a candidate."""

    __tablename__ = "candidate_followers"
    __table_args__ = (UniqueConstraint("candidate_id", "user_id"), NEVER_REUSE_IDS)

    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    move_action_id: Mapped[int | None] = mapped_column(ForeignKey("move_actions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TalentPool(CompanyOwned):
    """A named pool of candidates kept for later roles."""

    __tablename__ = "talent_pools"
    __table_args__ = (UniqueConstraint("company_id", "name"), NEVER_REUSE_IDS)

    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PoolMember(CompanyOwned):
    """A candidate in a talent pool."""

    __tablename__ = "talent_pool_members"
    __table_args__ = (UniqueConstraint("pool_id", "candidate_id"), NEVER_REUSE_IDS)

    pool_id: Mapped[int] = mapped_column(ForeignKey("talent_pools.id"), index=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    move_action_id: Mapped[int | None] = mapped_column(ForeignKey("move_actions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BulkMove(CompanyOwned):
    """Many candidates of a job moved (or disqualified) as one asynchronous job. Its
    workflow id is built from `key`, random, as a move's is."""

    __tablename__ = "bulk_moves"

    key: Mapped[str] = mapped_column(String(32), unique=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id"))
    disqualification_reason_id: Mapped[int | None] = mapped_column(
        ForeignKey("disqualification_reasons.id")
    )
    run_actions: Mapped[bool] = mapped_column(Boolean)
    requested_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    candidate_ids: Mapped[list[int]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class BulkMoveResult(CompanyOwned):
    """What a bulk move did for one candidate: moved (with the move), or refused (why)."""

    __tablename__ = "bulk_move_results"
    __table_args__ = (UniqueConstraint("bulk_move_id", "candidate_id"), NEVER_REUSE_IDS)

    bulk_move_id: Mapped[int] = mapped_column(ForeignKey("bulk_moves.id"), index=True)
    candidate_id: Mapped[int] = mapped_column(Integer)
    move_id: Mapped[int | None] = mapped_column(ForeignKey("moves.id"))
    detail: Mapped[str | None] = mapped_column(Text)


class RecipientEventKind(enum.StrEnum):
    ENTERED = "entered"
    PAUSED = "paused"
    RESUMED = "resumed"
    # The campaign was paused when a touchpoint fell due; released at its resume.
    HELD = "held"
    RELEASED = "released"
    EXITED = "exited"
    COMPLETED = "completed"


class RecipientEvent(CompanyOwned):
    """A change of a recipient's state, for their timeline; ids and times only. An exit
    names the touchpoint it cancelled (`position`, `due_at`), if one was pending; a hold
    the one that fell due, a release its new moment."""

    __tablename__ = "recipient_events"
    __table_args__ = (
        Index("ix_recipient_events_enrolment", "enrolment_id", "id"),
        Index("ix_recipient_events_campaign", "campaign_id", "at"),
        NEVER_REUSE_IDS,
    )

    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolments.id"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    candidate_id: Mapped[int] = mapped_column(Integer)
    run: Mapped[int] = mapped_column(Integer)
    kind: Mapped[RecipientEventKind] = mapped_column(_enum(RecipientEventKind))
    at: Mapped[datetime] = mapped_column()
    reason: Mapped[str | None] = mapped_column(String(32))
    position: Mapped[int | None] = mapped_column(Integer)
    due_at: Mapped[datetime | None] = mapped_column()


class MessageOpen(CompanyOwned):
    """One fetch of a campaign e-mail's open pixel (api/routers/tracking.py), for its
    campaign's numbers and its recipient's timeline. `machine`: fetched by a privacy proxy
    or a scanner, not a person reading it (Apple Mail Privacy Protection, an image proxy, a
    scanner's user agent, a fetch within seconds of delivery), with `why` it was taken for
    one; a human open has no `why`. Only touchpoints of companies with open tracking on
    carry a pixel, so every row names a campaign and a touchpoint (copied from the message,
    so that the numbers read this table alone). `first_of_kind` marks the message's first
    human open and its first machine open (one each at most), so that opened messages are
    counted without a DISTINCT."""

    __tablename__ = "message_opens"
    __table_args__ = (
        # The numbers: a campaign's opens and opened messages, by person or machine.
        Index("ix_message_opens_numbers", "campaign_id", "machine", "position", "first_of_kind"),
        Index(
            "ux_message_opens_first",
            "message_id",
            "machine",
            unique=True,
            sqlite_where=text("first_of_kind"),
            postgresql_where=text("first_of_kind"),
        ),
        NEVER_REUSE_IDS,
    )

    # The opened message's row (messages.id, not its Message-ID header).
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    # The message's touchpoint, 0 for the first.
    position: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[datetime] = mapped_column()
    machine: Mapped[bool] = mapped_column(Boolean)
    first_of_kind: Mapped[bool] = mapped_column(Boolean)
    why: Mapped[str | None] = mapped_column(Text)
    # The fetch's User-Agent, cut to its first 300 characters.
    user_agent: Mapped[str | None] = mapped_column(String(300))


# What store/numbers.py counts, read from indexes alone (PostgreSQL index-only scans): a
# campaign's recipients by status and exit reason with their runs (entries); when each
# candidate entered a campaign, and any of the company's (events count from there); a
# campaign's e-mails by touchpoint and state; the events it counts by type.
Index(
    "ix_enrolments_numbers",
    Enrolment.campaign_id,
    Enrolment.status,
    Enrolment.exit_reason,
    Enrolment.run,
)
Index("ix_enrolments_entries", Enrolment.campaign_id, Enrolment.candidate_id, Enrolment.entered_at)
Index(
    "ix_enrolments_company_entries",
    Enrolment.company_id,
    Enrolment.candidate_id,
    Enrolment.entered_at,
)
Index(
    "ix_messages_numbers",
    Message.campaign_id,
    Message.source_kind,
    Message.position,
    Message.state,
)
Index(
    "ix_received_events_numbers",
    ReceivedEvent.company_id,
    ReceivedEvent.type,
    ReceivedEvent.candidate_id,
    ReceivedEvent.occurred_at,
)


class Segment(CompanyOwned):
    """A saved filter over the company's candidates (store/segments.py): who it holds is
    decided each time it is read. `filter` is store.segments.SegmentFilter as JSON."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("company_id", "name"), NEVER_REUSE_IDS)

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    filter: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class EnrolmentBatchResult(CompanyOwned):
    """One candidate of a segment's batch: taken from the segment when the batch was asked
    for, then decided by the batch's activity (`result` and `reason` are
    store.enrolments' AddResult and RefusalReason; no result yet: still to decide). No
    foreign key to the candidate, as for a bulk move's results."""

    __tablename__ = "enrolment_batch_results"
    __table_args__ = (UniqueConstraint("batch_id", "candidate_id"), NEVER_REUSE_IDS)

    batch_id: Mapped[int] = mapped_column(ForeignKey("enrolment_batches.id"))
    candidate_id: Mapped[int] = mapped_column(Integer)
    result: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
