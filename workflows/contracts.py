"""What crosses the workflow boundary: frozen dataclasses of ids, enums and times only.

Temporal keeps every payload in its history, so no name, address, subject or body may
appear here: activities load those from the store by id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum


class ExitReason(StrEnum):
    """Why a recipient left a campaign before its last touchpoint."""

    APPLIED = "applied"
    REPLIED = "replied"
    CONNECTED = "connected"
    UNSUBSCRIBED = "unsubscribed"
    REMOVED = "removed"
    ARCHIVED = "archived"
    ERASED = "erased"
    NOT_ENROLLED = "not_enrolled"


class SendOutcome(StrEnum):
    SENT = "sent"
    ALREADY_SENT = "already_sent"
    # The peer may have taken it before a crash: not sent again (RFC 1047 window).
    UNCONFIRMED = "unconfirmed"
    FAILED = "failed"
    # The store said stop before it went: the recipient left (LEFT says so too).
    WITHDRAWN = "withdrawn"
    PAUSED = "paused"
    LEFT = "left"


@dataclass(frozen=True)
class TouchpointPlan:
    position: int
    interval_days: int
    send_hour: int
    send_minute: int

    @property
    def send_time(self) -> time:
        return time(self.send_hour, self.send_minute)


@dataclass(frozen=True)
class NurturePlan:
    """A saved campaign's schedule, frozen at enrolment: it cannot change after saving."""

    touchpoints: tuple[TouchpointPlan, ...]
    time_zone: str
    exit_options: tuple[str, ...]


@dataclass(frozen=True)
class NurtureInput:
    company_id: int
    campaign_id: int
    candidate_id: int
    enrolment_id: int
    run: int
    entered_at: datetime
    plan: NurturePlan


@dataclass(frozen=True)
class ExitSignal:
    """`run` names the enrolment it ends: a late repeat cannot end a later re-enrolment."""

    reason: ExitReason
    run: int | None = None


@dataclass(frozen=True)
class PauseSignal:
    paused_at: datetime


@dataclass(frozen=True)
class ResumeSignal:
    resumed_at: datetime


@dataclass(frozen=True)
class RecipientState:
    """What the workflow is doing now, as its query answers it."""

    status: str
    next_position: int | None
    next_send_at: datetime | None
    exit_reason: str | None


@dataclass(frozen=True)
class SendTouchpoint:
    """Send touchpoint `position` of enrolment `run`; on success the store records
    `next_position` / `next_send_at` (None after the last) in the same transaction."""

    enrolment_id: int
    run: int
    position: int
    scheduled_at: datetime
    next_position: int | None
    next_send_at: datetime | None


@dataclass(frozen=True)
class SendResult:
    outcome: SendOutcome
    exit_reason: str | None = None
    paused_at: datetime | None = None
    # Why the store said stop, in words, when it is not a recipient leaving.
    why: str | None = None
    # PAUSED because the whole campaign is: the pause's moment, which its resume follows.
    campaign_paused_at: datetime | None = None
    # ...or was, when this touchpoint fell due, and has been resumed since: its moment.
    campaign_resumed_at: datetime | None = None


@dataclass(frozen=True)
class CampaignTestInput:
    campaign_id: int
    message_ids: tuple[int, ...]


@dataclass(frozen=True)
class EnrolmentBatchInput:
    """`key` is the batch's own (random): its id alone may be handed out again after a
    rollback (SQLite), and then names another batch."""

    batch_id: int
    key: str | None = None


def nurture_workflow_id(campaign_id: int, candidate_id: int) -> str:
    return f"nurture/{campaign_id}/{candidate_id}"


@dataclass(frozen=True)
class StageActionsInput:
    """One move's actions; `move_key` is the move's own (random): its id alone may be
    handed out again after a rollback (SQLite), and then names another move."""

    company_id: int
    job_id: int
    candidate_id: int
    stage_id: int
    move_id: int
    move_key: str
    moved_at: datetime | None = None


@dataclass(frozen=True)
class PlannedAction:
    """A pending action of a move: the store's row `id`, its kind and its moment."""

    id: int
    kind: str
    due_at: datetime


@dataclass(frozen=True)
class ActionFailure:
    action: PlannedAction
    error: str


@dataclass(frozen=True)
class CancelMoveSignal:
    """The store has already cancelled the move's pending actions; this wakes the
    workflow, which then ends."""

    reason: str


@dataclass(frozen=True)
class SkipActionsSignal:
    """The store has cancelled these actions of the move alone (a reply ends the rules
    that wait for none): the workflow skips them and goes on. A signal of its own, so a
    worker that predates it leaves it unhandled rather than ending the whole move."""

    reason: str
    action_ids: list[int]


def stage_actions_workflow_id(job_id: int, candidate_id: int, move_key: str) -> str:
    return f"stage/{job_id}/{candidate_id}/{move_key}"


@dataclass(frozen=True)
class BulkMoveInput:
    """A bulk move's row and its random key (its id alone could come again after a
    rollback on SQLite, and then name another)."""

    bulk_id: int
    key: str


def bulk_move_workflow_id(key: str) -> str:
    return f"bulk-move/{key}"


@dataclass(frozen=True)
class CampaignSignalsInput:
    """Tell a campaign's workflows, in bulk, what its archive or resume at `at` decided
    (store.campaign_status.Told names which)."""

    campaign_id: int
    told: str
    at: datetime


def campaign_signals_workflow_id(campaign_id: int, told: str, at: datetime) -> str:
    return f"campaign-signals/{campaign_id}/{told}/{at:%Y%m%dT%H%M%S%fZ}"
