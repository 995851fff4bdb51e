"""The API's request and response bodies (separate from the tables and the workflows)."""

from __future__ import annotations

from datetime import datetime, time
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Path
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    model_validator,
)

from store.enrolments import AddResult, RefusalReason
from store.models import CampaignStatus, ExitOption, Format, RecipientStatus


def _time_of_day(value: Any) -> time:
    """`HH:MM` from 00:00 to 23:59, or a sentence saying so."""
    if isinstance(value, time):
        return value
    if not isinstance(value, str):
        raise ValueError('a time of day is a string HH:MM, e.g. "09:30"')
    hours, sep, minutes = value.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"'{value}' is not a time of day: write HH:MM, e.g. 09:30")
    if not (0 <= int(hours) <= 23 and 0 <= int(minutes) <= 59):
        raise ValueError(f"'{value}' is not a real time of day (00:00 to 23:59)")
    return time(int(hours), int(minutes))


TimeOfDay = Annotated[
    time,
    BeforeValidator(_time_of_day),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    Field(examples=["09:00"]),
]


# Ids are 32-bit on PostgreSQL: a larger one is simply not found, never a 500.
MAX_ID = 2**31 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
MAX_BULK = 5000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- candidates ---------------------------------------------------------------------------


class Consent(Strict):
    given_at: AwareDatetime
    method: str = Field(min_length=1, max_length=200, examples=["web form opt-in"])
    source: str = Field(min_length=1, max_length=200, examples=["careers site"])


class CandidateCreate(Strict):
    first_name: str = Field(min_length=1, max_length=200)
    last_name: str = Field(default="", max_length=200)
    email: EmailStr | None = None
    custom_fields: dict[str, str] = Field(default_factory=dict)
    consent: Consent | None = None


class CandidateUpdate(Strict):
    """Only the fields sent change; `email: null` removes the address."""

    first_name: str | None = Field(default=None, min_length=1, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    email: EmailStr | None = None
    custom_fields: dict[str, str] | None = None
    consent: Consent | None = None

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
    created_at: datetime


class CandidatePage(BaseModel):
    total: int
    items: list[CandidateOut]


# -- campaigns ----------------------------------------------------------------------------


class TouchpointIn(Strict):
    subject: str = Field(min_length=1, max_length=998, examples=["{{ first_name }}, news from us"])
    body: str = Field(min_length=1, examples=["Hello {{ first_name }},\n\n..."])
    format: Format = Format.PLAIN
    sender_user_id: Id
    send_time: TimeOfDay
    interval_days: int | None = Field(
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
    touchpoints: list[TouchpointIn] = Field(min_length=1)


class CampaignUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None
    exit_options: list[ExitOption] | None = None
    touchpoints: list[TouchpointIn] | None = None


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


class CampaignTest(Strict):
    recipients: list[EmailStr] = Field(min_length=1, max_length=20)
    candidate_id: Id | None = Field(
        default=None, description="Fill the variables from this candidate instead of samples."
    )


class TestSendOut(BaseModel):
    touchpoint: int
    to: str
    outcome: str


class CampaignTestOut(BaseModel):
    workflow_id: str
    sends: list[TestSendOut]


# -- recipients ---------------------------------------------------------------------------


class RecipientAdd(Strict):
    candidate_id: Id
    re_enrol: bool = False


class RecipientsAdd(Strict):
    """Up to 5,000 ids a request: send a larger segment in several requests, each of
    which answers at once while its workflows start in the background."""

    candidate_ids: list[Id] = Field(min_length=1, max_length=MAX_BULK)
    re_enrol: bool = False


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


class RecipientOut(BaseModel):
    candidate_id: int
    name: str
    status: RecipientStatus
    exit_reason: str | None
    entered_at: datetime
    left_at: datetime | None
    next_touchpoint: int | None = Field(description="1 for the first touchpoint")
    next_send_at: datetime | None = Field(description="UTC")
    next_send_at_local: str | None = Field(description="In the company's time zone")
    time_zone: str


class RecipientPage(BaseModel):
    total: int
    items: list[RecipientOut]


# -- events -------------------------------------------------------------------------------


class EventType(StrEnum):
    APPLIED = "applied"
    REPLIED = "replied"
    CONNECTED = "connected"
    UNSUBSCRIBED = "unsubscribed"


class EventIn(Strict):
    id: str | None = Field(
        default=None, max_length=200, description="Yours; or send an Idempotency-Key header."
    )
    type: EventType
    candidate_id: Id
    occurred_at: AwareDatetime | None = None


class EventOut(BaseModel):
    event_id: str
    type: EventType
    candidate_id: int
    ended_campaigns: list[int]
    duplicate: bool = False
