"""The API's request and response bodies (separate from the tables and the workflows)."""

from __future__ import annotations

import re
from datetime import date, datetime, time
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from mail.message import UndeliverableAddressError, deliverable_address
from mail.rendering import LIMITS
from store.campaigns import MAX_INTERVAL, MAX_TOUCHPOINTS, MIN_INTERVAL
from store.enrolments import AddResult, RefusalReason
from store.models import (
    ActionKind,
    ActionState,
    ApplicationSource,
    CampaignStatus,
    CandidateCategory,
    ExitOption,
    Format,
    MessageState,
    RecipientStatus,
)
from store.pipelines import (
    MAX_ACTIONS,
    MAX_DELAY_DAYS,
    MAX_DELAY_HOURS,
    MAX_REASONS,
    MAX_RULES,
    MAX_STAGES,
)

# What `_time_of_day` accepts, said again for the document: clients and generators read the
# pattern, and a `format: time` would promise seconds and zones that are refused.
TIME_OF_DAY_PATTERN = r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$"


def _digits(text: str, most: int, least: int = 1) -> bool:
    return least <= len(text) <= most and text.isascii() and text.isdigit()


def _time_of_day(value: Any) -> time:
    """`HH:MM` (or `H:MM`) from 00:00 to 23:59, or a sentence saying so."""
    if isinstance(value, time):
        return value
    if not isinstance(value, str):
        raise ValueError('a time of day is a string HH:MM, e.g. "09:30"')
    hours, sep, minutes = value.partition(":")
    if not (sep and _digits(hours, 2) and _digits(minutes, 2, 2)):
        raise ValueError(f"'{value}' is not a time of day: write HH:MM, e.g. 09:30")
    if not (int(hours) <= 23 and int(minutes) <= 59):
        raise ValueError(f"'{value}' is not a real time of day (00:00 to 23:59)")
    return time(int(hours), int(minutes))


TimeOfDay = Annotated[
    time,
    BeforeValidator(_time_of_day),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": TIME_OF_DAY_PATTERN}),
    Field(examples=["09:00"], description="A local time of day, HH:MM (00:00 to 23:59)"),
]

# RFC 3339, as the document's `format: date-time` says: pydantic alone would also take a
# number of seconds since 1970, a time without seconds, or a space for the "T". (A time
# without its offset passes here for AwareDatetime to say what it lacks.)
_RFC_3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


def _moment(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC_3339.fullmatch(value)):
        return value
    raise ValueError(
        f"{value!r} is not a date and time: write it as RFC 3339 says, e.g. 2026-01-15T10:00:00Z"
    )


Moment = Annotated[AwareDatetime, BeforeValidator(_moment)]


# Ids are 32-bit on PostgreSQL: a larger one is simply not found, never a 500.
MAX_ID = 2**31 - 1


def _json_integer(value: Any) -> Any:
    """An integer as JSON Schema says (3, or 3.0), never `true` read as 1 nor "3" as 3."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not an integer")
    return value


# The validator comes after the bounds, so the document still states them.
Integer = BeforeValidator(_json_integer)
Id = Annotated[int, Field(ge=1, le=MAX_ID), Integer]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
MAX_BULK = 5000
# Every integer of a query is bounded, so none can overflow the database's 64-bit ones.
Limit = Annotated[int, Query(ge=1, le=1000, description="How many rows at most (1 to 1,000)")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="How many rows to skip")]


def _address(value: str) -> str:
    try:
        return deliverable_address(value)
    except UndeliverableAddressError as error:
        raise ValueError(str(error)) from None


Address = Annotated[
    str,
    AfterValidator(_address),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 254}),
    Field(
        description="An ASCII local part; an internationalized domain is kept in its "
        "IDNA (punycode) form",
        examples=["grace@example.org"],
    ),
]
# Custom-field values fill templates: bounded here, and again when a template renders.
MAX_FIELD_VALUE = LIMITS.field_value_chars
FieldValue = Annotated[str, Field(max_length=MAX_FIELD_VALUE)]


def _nul_in(value: Any, where: str) -> str | None:
    """Where a NUL character hides in a request's text, if anywhere."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, Strict):
        return None  # it checked its own fields when it was validated
    if isinstance(value, BaseModel):
        items: Any = ((f"{where}.{k}", v) for k, v in value)
    elif isinstance(value, dict):
        items = ((f"{where}.{k}", v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}.{n}", v) for n, v in enumerate(value))
    else:
        return None
    return next((found for w, v in items if (found := _nul_in(v, w)) is not None), None)


class Strict(BaseModel):
    """A request body: no field we do not know, and no NUL character in any text (PostgreSQL
    cannot store one, and no name, template or address has a use for it)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nul_character(self) -> Self:
        for name, value in self:
            where = _nul_in(value, name)
            if where is not None:
                raise ValueError(
                    f"{where} contains a NUL character (\\u0000), which no text may hold"
                )
        return self


# -- candidates ---------------------------------------------------------------------------


class Consent(Strict):
    given_at: Moment
    method: str = Field(min_length=1, max_length=200, examples=["web form opt-in"])
    source: str = Field(min_length=1, max_length=200, examples=["careers site"])


class CandidateCreate(Strict):
    first_name: str = Field(min_length=1, max_length=200)
    last_name: str = Field(default="", max_length=200)
    email: Address | None = None
    custom_fields: dict[str, FieldValue] = Field(default_factory=dict)
    consent: Consent | None = None
    category: CandidateCategory = Field(
        default=CandidateCategory.PASSIVE_TALENT,
        description="What the candidate is to the company; one who has not applied is "
        "passive talent",
    )


def _category_kept_or_changed(value: Any) -> Any:
    """A category sent in a change, said plainly (not as the union of a category and the
    left-out null it may not be)."""
    if value is None:
        raise ValueError("category cannot be null; leave it out to keep it")
    try:
        return CandidateCategory(value)
    except ValueError:
        names = ", ".join(c.value for c in CandidateCategory)
        raise ValueError(f"{value!r} is not a category: give one of {names}") from None


class CandidateUpdate(Strict):
    """Only the fields sent change; `email: null` removes the address."""

    # None stands for "not sent": only `email` may be sent as null, so only its schema
    # says null.
    first_name: Annotated[str, Field(min_length=1, max_length=200)] | SkipJsonSchema[None] = None
    last_name: Annotated[str, Field(max_length=200)] | SkipJsonSchema[None] = None
    email: Address | None = None
    custom_fields: dict[str, FieldValue] | SkipJsonSchema[None] = None
    consent: Consent | SkipJsonSchema[None] = None
    category: Annotated[
        CandidateCategory | SkipJsonSchema[None], BeforeValidator(_category_kept_or_changed)
    ] = None

    @model_validator(mode="after")
    def _no_null_where_a_value_is_required(self) -> CandidateUpdate:
        for name in ("first_name", "last_name", "custom_fields", "consent"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null; leave it out to keep it")
        return self


class CandidateOut(BaseModel):
    id: int
    first_name: str
    last_name: str
    email: str | None
    custom_fields: dict[str, Any]
    consent: Consent | None
    unsubscribed_at: datetime | None
    category: CandidateCategory
    created_at: datetime


class CandidatePage(BaseModel):
    total: int
    items: list[CandidateOut]


class ErasureOut(BaseModel):
    """A candidate erased (GDPR): what it cancelled, so that no cancellation is silent."""

    candidate_id: int
    erased_at: datetime
    already_erased: bool = Field(
        description="Erased before: this answers what that erasure cancelled, and tells "
        "their workflows again"
    )
    ended_campaigns: list[int] = Field(description="The campaigns the candidate left (erased)")
    cancelled_touchpoints: list[CancelledTouchpointOut] = Field(
        description="The touchpoint each of those campaigns had pending: it never goes out"
    )
    cancelled_actions: list[CancelledOut] = Field(
        description="The pending actions of the candidate's stage moves: none of them runs"
    )


# -- campaigns ----------------------------------------------------------------------------


class TouchpointIn(Strict):
    subject: str = Field(
        min_length=1, max_length=LIMITS.subject_chars, examples=["{{ first_name }}, news from us"]
    )
    body: str = Field(
        min_length=1, max_length=LIMITS.body_chars, examples=["Hello {{ first_name }},\n\n..."]
    )
    format: Format = Format.PLAIN
    sender_user_id: Id
    send_time: TimeOfDay
    interval_days: Annotated[int, Field(ge=MIN_INTERVAL, le=MAX_INTERVAL), Integer] | None = Field(
        default=None,
        description="Whole days after the previous touchpoint (1 to 100, default 1); "
        "the first touchpoint has none.",
    )


class TouchpointOut(TouchpointIn):
    number: int = Field(description="1 for the first touchpoint")
    day_offset: int = Field(
        description="Days after entry on which it goes out (plus one when "
        "the first send time of the entry day has passed)"
    )


class CampaignCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    exit_options: list[ExitOption] = Field(default_factory=list)
    touchpoints: list[TouchpointIn] = Field(min_length=1, max_length=MAX_TOUCHPOINTS)


class CampaignUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None
    exit_options: list[ExitOption] | None = None
    touchpoints: list[TouchpointIn] | None = Field(default=None, max_length=MAX_TOUCHPOINTS)


class CampaignOut(BaseModel):
    id: int
    name: str
    description: str
    status: CampaignStatus
    exit_options: list[ExitOption]
    time_zone: str
    created_at: datetime
    saved_at: datetime | None
    touchpoints: list[TouchpointOut]


class CampaignSummary(BaseModel):
    id: int
    name: str
    status: CampaignStatus
    touchpoints: int
    saved_at: datetime | None
    numbers: NumbersOut


class CancelledTouchpointOut(BaseModel):
    """A pending touchpoint that an exit cancelled: it will never go out."""

    campaign_id: int
    candidate_id: int
    name: str | None = Field(default=None, description="The candidate's, when listed by campaign")
    touchpoint: int = Field(description="1 for the first touchpoint")
    due_at: datetime | None = Field(description="When it was due (UTC)")


class CampaignStatusOut(BaseModel):
    id: int
    status: CampaignStatus
    paused_at: datetime | None
    resumed_at: datetime | None
    archived_at: datetime | None
    released: int | None = Field(
        default=None,
        description="A resume: the recipients whose touchpoint fell due during the pause; "
        "each goes out at its send time on the first day after the resume",
    )
    cancelled_total: int | None = Field(
        default=None, description="An archive: the pending touchpoints it cancelled"
    )
    cancelled: list[CancelledTouchpointOut] = Field(
        default_factory=list,
        description="An archive: those touchpoints, by candidate, up to `limit` from `offset`",
    )


class CampaignTest(Strict):
    recipients: list[Address] = Field(min_length=1, max_length=20)
    candidate_id: Id | None = Field(
        default=None, description="Fill the variables from this candidate instead of samples."
    )


class TestSendOut(BaseModel):
    touchpoint: int
    to: str = Field(description="The address the message was sent to: a test address only")
    outcome: MessageState
    error: str | None = Field(default=None, description="Why it was not sent, when it was not")


class CampaignTestOut(BaseModel):
    workflow_id: str
    sends: list[TestSendOut]


# -- recipients ---------------------------------------------------------------------------


class RecipientAdd(Strict):
    candidate_id: Id
    re_enrol: bool = Field(default=False, strict=True)


class RecipientsAdd(Strict):
    """Up to 5,000 ids a request: send a larger segment in several requests, each of
    which answers at once while its workflows start in the background."""

    candidate_ids: list[Id] = Field(min_length=1, max_length=MAX_BULK)
    re_enrol: bool = Field(default=False, strict=True)


class AddOut(BaseModel):
    candidate_id: int
    result: AddResult
    reason: RefusalReason | None = None
    detail: str | None = None


class BulkAddOut(BaseModel):
    batch_id: int | None
    added: int
    already_active: int
    refused: int
    results: list[AddOut]


class BatchOut(BaseModel):
    batch_id: int
    added: int
    started: int
    finished_at: datetime | None
    segment_id: int | None = Field(
        default=None, description="The segment it took its candidates from; none: a list"
    )
    total: int = Field(default=0, description="Candidates in the batch")
    already_active: int = 0
    refused: int = 0
    decided: int = Field(
        default=0,
        description="Candidates with a verdict so far (added, already active or refused); "
        "a list's were all decided by its request",
    )


class RecipientOut(BaseModel):
    candidate_id: int
    name: str
    status: RecipientStatus
    exit_reason: str | None
    entered_at: datetime
    left_at: datetime | None
    next_touchpoint: int | None = Field(description="1 for the first touchpoint")
    next_send_at: datetime | None = Field(description="UTC; none while paused")
    next_send_at_local: str | None = Field(description="In the company's time zone")
    paused_at: datetime | None = Field(default=None, description="When paused, if paused")
    held_since: datetime | None = Field(
        default=None,
        description="Its touchpoint fell due while the campaign was paused (since this "
        "pause): it goes out at its send time on the first day after the resume",
    )
    cancelled_touchpoint: CancelledTouchpointOut | None = Field(
        default=None, description="Left: the pending touchpoint its exit cancelled"
    )
    remaining_wait_seconds: int | None = Field(
        default=None,
        description="While paused: the wait left before the next touchpoint, which goes "
        "on from the resume and then snaps to the touchpoint's send time",
    )
    time_zone: str


class TimelineEntryOut(BaseModel):
    at: datetime
    at_local: str = Field(description="In the company's time zone")
    kind: str = Field(
        description="entered, paused, resumed, held, released, exited, completed; a "
        "touchpoint's sent, unconfirmed, failed, withdrawn, prepared, sending, skipped, "
        "opened; and the scheduled one last"
    )
    run: int = Field(description="Which enrolment of the candidate (re-enrolments count up)")
    touchpoint: int | None = Field(default=None, description="1 for the first touchpoint")
    due_at: datetime | None = None
    message_id: str | None = Field(default=None, description="The e-mail's Message-ID")
    why: str | None = None


class TimelineOut(BaseModel):
    campaign_id: int
    candidate_id: int
    status: RecipientStatus
    exit_reason: str | None
    time_zone: str
    entries: list[TimelineEntryOut]


class RecipientPage(BaseModel):
    total: int
    items: list[RecipientOut]


# -- numbers, the schedule and open tracking ----------------------------------------------


class NumbersOut(BaseModel):
    """Counted from the store. Test sends count nowhere; meetings, offers and hires are
    the backend's events about the campaign's candidates from their entry on."""

    total_candidates: int = Field(
        description="Candidates who ever entered (a re-enrolled one counts once)"
    )
    emails_sent: int = Field(description="Touchpoint e-mails the receiving server took")
    emails_unconfirmed: int = Field(
        description="Touchpoint e-mails that may or may not have been delivered (the "
        "server's reply to the end of the message never came); not in emails_sent, and "
        "never sent again"
    )
    meetings_scheduled: int = Field(description="meeting_scheduled events")
    offers_made: int = Field(description="offer_made events")
    candidates_hired: int = Field(description="Candidates with a hired event")


class AllNumbersOut(NumbersOut):
    """Every campaign of the company together: a candidate of two campaigns, and an event
    about them, count once."""

    campaigns: int = Field(description="The company's campaigns, drafts included")


class TouchpointNumbersOut(BaseModel):
    number: int = Field(description="1 for the first touchpoint")
    sent: int
    unconfirmed: int
    failed: int
    opened: int = Field(description="E-mails sent that a person opened at least once")
    machine_opened: int = Field(
        description="E-mails sent whose pixel a privacy proxy or a scanner fetched"
    )
    opens: int = Field(description="Fetches of the pixel by people (reopens included)")
    machine_opens: int = Field(description="Fetches of the pixel by machines")
    open_rate: float | None = Field(description="opened / sent; none before the first send")


class CampaignNumbersOut(NumbersOut):
    campaign_id: int
    status: CampaignStatus
    entries: int = Field(description="Entries into the campaign, each re-enrolment included")
    active: int = Field(description="Recipients in the campaign now, not paused")
    paused: int
    completed: int = Field(description="Recipients who received every touchpoint")
    exited: int = Field(description="Recipients who left early: the sum of exits")
    exits: dict[str, int] = Field(
        description="Recipients who left early, by exit reason (a re-enrolled one by the "
        "end of their last run)"
    )
    emails_failed: int = Field(description="Touchpoint e-mails that could not be delivered")
    opened: int = Field(description="E-mails sent that a person opened at least once")
    machine_opened: int = Field(
        description="E-mails sent whose pixel a privacy proxy or a scanner fetched (Apple "
        "Mail Privacy Protection, an image proxy, a fetch within seconds of delivery): "
        "counted apart, not in open_rate"
    )
    open_rate: float | None = Field(
        description="opened / emails_sent, as a share of 1; none before the first send"
    )
    open_tracking: bool = Field(
        description="Whether the company tracks opens now (off: no pixel, no open counted)"
    )
    touchpoints: list[TouchpointNumbersOut]


class ScheduleEntryOut(BaseModel):
    number: int = Field(description="1 for the first touchpoint")
    day_offset: int = Field(
        description="Days after entry on which it goes out (plus one when the first send "
        "time of the entry day has passed)"
    )
    send_time: TimeOfDay
    interval_days: int | None = Field(
        description="Days after the previous touchpoint; none for the first"
    )
    subject: str
    format: Format
    sender_user_id: int


class ScheduleOut(BaseModel):
    """The campaign's agenda: its sequence, with day offsets and send times."""

    campaign_id: int
    status: CampaignStatus
    time_zone: str = Field(description="The company's: send times are local to it")
    fixed: bool = Field(description="Saved: the sequence can no longer change")
    touchpoints: list[ScheduleEntryOut]


class CompanyOut(BaseModel):
    id: int
    name: str
    time_zone: str
    campaigns_enabled: bool
    open_tracking: bool = Field(
        description="Campaign e-mails carry an open-tracking pixel (off by default: under "
        "ePrivacy the pixel needs the candidate's consent)"
    )


class CompanyUpdate(Strict):
    open_tracking: bool = Field(
        strict=True,
        description="Put a pixel in branded campaign e-mails and count their opens; turn "
        "it on only with the candidates' consent",
    )


# -- events -------------------------------------------------------------------------------


class EventType(StrEnum):
    APPLIED = "applied"
    REPLIED = "replied"
    CONNECTED = "connected"
    UNSUBSCRIBED = "unsubscribed"
    # Counted in the numbers of the candidate's campaigns; they end none.
    MEETING_SCHEDULED = "meeting_scheduled"
    OFFER_MADE = "offer_made"
    HIRED = "hired"


class EventIn(Strict):
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Yours; or send an Idempotency-Key header.",
    )
    type: EventType
    candidate_id: Id
    occurred_at: Moment | None = None


class EventOut(BaseModel):
    event_id: str
    type: EventType
    candidate_id: int
    ended_campaigns: list[int]
    cancelled_touchpoints: list[CancelledTouchpointOut] = Field(
        default_factory=list,
        description="The pending touchpoints of the campaigns it ended: none will go out",
    )
    cancelled_actions: list[CancelledOut] = Field(
        default_factory=list,
        description="A reply: the pending actions of rules that wait for no reply, ended",
    )
    duplicate: bool = False


# -- pipelines ----------------------------------------------------------------------------

LOCAL_AT_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]$"


class EmailSettings(Strict):
    subject: str = Field(min_length=1, max_length=LIMITS.subject_chars)
    body: str = Field(min_length=1, max_length=LIMITS.body_chars)
    format: Format = Format.PLAIN
    sender_user_id: Id | None = Field(
        default=None,
        description="The teammate it appears to come from; none: the user who moves the candidate.",
    )


class NoteSettings(Strict):
    text: str = Field(min_length=1, max_length=5000)


Tag = Annotated[str, Field(min_length=1, max_length=100)]


class TagsSettings(Strict):
    tags: list[Tag] = Field(min_length=1, max_length=20)


class _TaskSettings(Strict):
    title: str = Field(min_length=1, max_length=200)
    assignee_user_id: Id


class TaskInDays(_TaskSettings):
    due_in_days: Annotated[int, Field(ge=0, le=MAX_DELAY_DAYS), Integer] = Field(
        description="Due this many days after the action runs (the company's calendar)"
    )


class TaskOnDate(_TaskSettings):
    due_on: date


TaskSettings = TaskInDays | TaskOnDate


class EvaluationSettings(Strict):
    evaluator_user_id: Id


class FollowersSettings(Strict):
    user_ids: list[Id] = Field(min_length=1, max_length=20)


class AssignToJob(Strict):
    job_id: Id


class AssignToPool(Strict):
    talent_pool_id: Id


AssignSettings = AssignToJob | AssignToPool


class _Action(Strict):
    """When an action runs: give at most one of `delay_hours`, `delay_days` and `at`;
    none runs it at once. Presets: 1 hour (`delay_hours: 1`), 1 day, 3 days
    (`delay_days`, which keep the local time of the move across DST)."""

    delay_hours: Annotated[int, Field(ge=1, le=MAX_DELAY_HOURS), Integer] | None = None
    delay_days: Annotated[int, Field(ge=1, le=MAX_DELAY_DAYS), Integer] | None = None
    at: str | None = Field(
        default=None,
        pattern=LOCAL_AT_PATTERN,
        description="A local date and time, YYYY-MM-DDTHH:MM, in the company's time zone",
        examples=["2027-01-15T09:00"],
    )

    def settings(self) -> dict[str, Any]:
        kind: ActionKind = getattr(self, "kind")  # noqa: B009 (each subclass has its own)
        chosen = getattr(self, kind.value)
        assert isinstance(chosen, BaseModel)
        return chosen.model_dump(mode="json")


class EmailAction(_Action):
    kind: Literal[ActionKind.EMAIL]
    email: EmailSettings


class NoteAction(_Action):
    kind: Literal[ActionKind.NOTE]
    note: NoteSettings


class TagsAction(_Action):
    kind: Literal[ActionKind.TAGS]
    tags: TagsSettings


class TaskAction(_Action):
    kind: Literal[ActionKind.TASK]
    task: TaskSettings


class EvaluationAction(_Action):
    kind: Literal[ActionKind.EVALUATION]
    evaluation: EvaluationSettings


class FollowersAction(_Action):
    kind: Literal[ActionKind.FOLLOWERS]
    followers: FollowersSettings


class AssignAction(_Action):
    kind: Literal[ActionKind.ASSIGN]
    assign: AssignSettings


# The kind says which settings the action takes, in the field of its name.
ActionIn = Annotated[
    EmailAction
    | NoteAction
    | TaskAction
    | TagsAction
    | EvaluationAction
    | FollowersAction
    | AssignAction,
    Field(discriminator="kind"),
]


class RuleIn(Strict):
    """If the candidate is still in the stage `after_days` days after entering it (and,
    with `unless_replied`, has not replied since), the actions run then. They take no
    delay or date of their own."""

    after_days: Annotated[int, Field(ge=1, le=MAX_DELAY_DAYS), Integer]
    unless_replied: bool = Field(default=False, strict=True)
    actions: list[ActionIn] = Field(min_length=1, max_length=MAX_ACTIONS)


class StageIn(Strict):
    id: Id | None = Field(default=None, description="Keep this existing stage; none: new")
    name: str = Field(min_length=1, max_length=100)
    actions: list[ActionIn] = Field(default_factory=list, max_length=MAX_ACTIONS)
    rules: list[RuleIn] = Field(default_factory=list, max_length=MAX_RULES)


class StageOut(BaseModel):
    id: int
    name: str
    actions: list[ActionIn]
    rules: list[RuleIn]


class ReasonIn(Strict):
    id: Id | None = Field(default=None, description="Keep this existing reason; none: new")
    name: str = Field(min_length=1, max_length=100)
    actions: list[ActionIn] = Field(default_factory=list, max_length=MAX_ACTIONS)


class ReasonsIn(Strict):
    reasons: list[ReasonIn] = Field(max_length=MAX_REASONS)


class ReasonOut(BaseModel):
    id: int
    name: str
    actions: list[ActionIn]


class ReasonsOut(BaseModel):
    reasons: list[ReasonOut]


class PipelineIn(Strict):
    stages: list[StageIn] = Field(min_length=1, max_length=MAX_STAGES)


class PipelineOut(BaseModel):
    job_id: int | None = Field(description="None for the company's default pipeline")
    stages: list[StageOut]


class JobCreate(Strict):
    title: str = Field(min_length=1, max_length=200)


class JobOut(BaseModel):
    id: int
    title: str
    created_at: datetime
    stages: list[StageOut]


class ApplicationIn(Strict):
    candidate_id: Id
    source: ApplicationSource = ApplicationSource.CAREERS_SITE


class MoveIn(Strict):
    stage_id: Id
    run_actions: bool | None = Field(
        default=None,
        strict=True,
        description="Run the stage's actions (default); required when the candidate was "
        "in that stage before",
    )


class DisqualifyIn(Strict):
    reason_id: Id = Field(description="One of the company's disqualification reasons")
    run_actions: bool | None = Field(
        default=None,
        strict=True,
        description="Run the reason's actions (default); required when the candidate was "
        "disqualified for that reason before",
    )


class MoveActionOut(BaseModel):
    id: int | None = Field(description="None in a preview")
    kind: ActionKind
    state: ActionState
    due_at: datetime
    due_at_local: str
    rule_after_days: int | None = Field(
        default=None, description="A rule's action: its days after the move"
    )
    unless_replied: bool = Field(default=False, description="A reply before then ends it")
    reason: str | None = Field(description="Why it was cancelled, or the error it failed with")
    finished_at: datetime | None


class CancelledOut(BaseModel):
    move_id: int
    action_id: int
    kind: ActionKind
    due_at: datetime


class MoveOut(BaseModel):
    id: int
    job_id: int
    candidate_id: int
    from_stage_id: int | None
    to_stage_id: int
    disqualification_reason_id: int | None = Field(
        default=None, description="A disqualification: the candidate stays in to_stage_id"
    )
    run_actions: bool
    created_at: datetime
    workflow_id: str | None = Field(description="Its StageActionsWorkflow, if it has actions")
    actions: list[MoveActionOut]
    cancelled: list[CancelledOut] = Field(
        default_factory=list, description="What this request cancelled: pending actions"
    )


class PreviewOut(BaseModel):
    """What the move would do if made now: nothing is written."""

    actions: list[MoveActionOut]
    cancelled: list[CancelledOut] = Field(
        description="The pending actions of earlier moves it would cancel"
    )


MAX_BULK_MOVE = 10_000


class BulkToStage(Strict):
    """A bulk move into the job's stage `stage_id`."""

    stage_id: Id


class BulkDisqualify(Strict):
    """A bulk disqualification for the company's reason `reason_id`."""

    reason_id: Id


class _BulkMove(Strict):
    candidate_ids: list[Id] = Field(min_length=1, max_length=MAX_BULK_MOVE)
    run_actions: bool = Field(
        strict=True, description="Run the actions (listed by the preview) or move without them"
    )


class BulkMoveToStage(_BulkMove, BulkToStage):
    pass


class BulkDisqualifyMany(_BulkMove, BulkDisqualify):
    pass


BulkMoveIn = BulkMoveToStage | BulkDisqualifyMany
BulkPreviewIn = BulkToStage | BulkDisqualify


class BulkPreviewOut(BaseModel):
    actions: list[ActionIn] = Field(description="What each moved candidate's move runs")
    rules: list[RuleIn] = Field(description="The rules that will wait for each of them")


class BulkResultOut(BaseModel):
    candidate_id: int
    result: Literal["moved", "refused"]
    move_id: int | None
    detail: str | None


class BulkMoveOut(BaseModel):
    id: int
    job_id: int
    stage_id: int | None
    reason_id: int | None
    run_actions: bool
    total: int
    moved: int
    refused: int
    created_at: datetime
    finished_at: datetime | None = Field(description="None while it runs")
    workflow_id: str = Field(description="Its BulkMoveWorkflow")
    results: list[BulkResultOut]


class TalentPoolIn(Strict):
    name: str = Field(min_length=1, max_length=100)


class TalentPoolOut(BaseModel):
    id: int
    name: str


class UserOut(BaseModel):
    id: int
    name: str
    role: str
    manages_automations: bool


class UserUpdate(Strict):
    manages_automations: bool = Field(
        strict=True, description="May configure pipelines' automatic actions (admins always may)"
    )


class RecordOut(BaseModel):
    """Something on the candidate's record; `automatic` when an action made it (the
    lightning mark), with that action."""

    id: int
    kind: Literal["note", "task", "tag", "evaluation", "follower", "talent_pool", "application"]
    job_id: int | None
    summary: str
    automatic: bool
    move_action_id: int | None
    created_at: datetime


class RecordsOut(BaseModel):
    candidate_id: int
    records: list[RecordOut]


# -- segments -----------------------------------------------------------------------------


class LastContactedIn(Strict):
    """When the candidate was last sent an e-mail (a campaign's or a stage's; test sends
    reach no candidate). Give `never`, or `before` and/or `after`: `never: true`, no
    e-mail ever; `never: false`, at least one; `before`, the last one before that moment
    (with `include_never`, or none at all: "not contacted since"); `after`, the last one
    at or after it; both, between the two."""

    never: bool | None = Field(default=None, strict=True)
    before: Moment | None = None
    after: Moment | None = None
    include_never: bool = Field(
        default=False, strict=True, description="With `before`: those never contacted too"
    )

    @model_validator(mode="after")
    def _one_question(self) -> Self:
        dated = self.before is not None or self.after is not None
        if self.never is not None and dated:
            raise ValueError("never cannot be combined with before or after: give one or the other")
        if self.never is None and not dated:
            raise ValueError("give never (true or false), or before and/or after")
        if self.include_never and self.before is None:
            raise ValueError("include_never goes with before (not contacted since a moment)")
        if self.before is not None and self.after is not None and self.after >= self.before:
            raise ValueError("after must be earlier than before, or nobody can match")
        return self


class SegmentFilterIn(Strict):
    """Every condition given must hold (none given: every candidate of the company).
    A condition left out or null is no condition."""

    categories: list[CandidateCategory] | None = Field(
        default=None, min_length=1, max_length=3, description="Any of these categories"
    )
    tags: list[Tag] | None = Field(
        default=None, min_length=1, max_length=20, description="Every one of these tags"
    )
    any_tags: list[Tag] | None = Field(
        default=None, min_length=1, max_length=20, description="At least one of these tags"
    )
    custom_fields: dict[str, FieldValue] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="Each custom field (one the company declares) equal to its value",
    )
    consent: bool | None = Field(
        default=None, strict=True, description="Consent to be contacted recorded (or not)"
    )
    last_contacted: LastContactedIn | None = None


class SegmentCreate(Strict):
    name: str = Field(min_length=1, max_length=200, description="Unique in the company")
    description: str = Field(default="", max_length=2000)
    filter: SegmentFilterIn = Field(default_factory=SegmentFilterIn)


class SegmentUpdate(Strict):
    """Only the fields sent change (null, or left out: kept); a batch already taken from
    the segment keeps its candidates."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    filter: SegmentFilterIn | None = Field(
        default=None, description="The whole filter, replacing the one before"
    )


class SegmentOut(BaseModel):
    id: int
    name: str
    description: str
    filter: SegmentFilterIn
    created_at: datetime
    updated_at: datetime


class SegmentPage(BaseModel):
    total: int
    items: list[SegmentOut]


class SegmentAdd(Strict):
    segment_id: Id = Field(description="One of the company's segments")
    re_enrol: bool = Field(
        default=False, strict=True, description="Enrol again those who left the campaign"
    )


class BatchResultPage(BaseModel):
    total: int = Field(description="Verdicts so far (of that result, when asked)")
    items: list[AddOut]
