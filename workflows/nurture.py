"""NurtureWorkflow: one candidate in one campaign, sleeping until each touchpoint is due."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.nurture import NurtureActivities
    from workflows import timing
    from workflows.contracts import (
        ExitReason,
        ExitSignal,
        NurtureInput,
        PauseSignal,
        RecipientState,
        ResumeSignal,
        SendOutcome,
        SendResult,
        SendTouchpoint,
    )

CAMPAIGN_ID = SearchAttributeKey.for_keyword("NurtureCampaignId")
CANDIDATE_ID = SearchAttributeKey.for_keyword("NurtureCandidateId")
STATE = SearchAttributeKey.for_keyword("NurtureState")
NEXT_SEND_AT = SearchAttributeKey.for_datetime("NurtureNextSendAt")
SEARCH_ATTRIBUTES = (CAMPAIGN_ID, CANDIDATE_ID, STATE, NEXT_SEND_AT)

SEND_HEARTBEAT = timedelta(seconds=10)
SEND_TIMEOUT = timedelta(minutes=2)
SEND_GIVE_UP = timedelta(days=1)
SEND_RETRY = RetryPolicy(
    # Soon: a retry after a worker died finds the message as the dead attempt left it.
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
)


# Sends run as local activities from this patch on (see `_send`).
LOCAL_SEND = "send-in-workflow-task"


def attempts_within(policy: RetryPolicy, span: timedelta) -> int:
    """How many attempts `policy` starts within `span`: a local activity's give-up is
    counted in attempts, because its schedule-to-close runs on the worker's clock, which a
    time-skipping test server does not move."""
    assert policy.initial_interval is not None and policy.maximum_interval is not None
    attempts, waited, interval = 1, timedelta(0), policy.initial_interval
    while waited + interval <= span:
        waited += interval
        attempts += 1
        interval = min(interval * policy.backoff_coefficient, policy.maximum_interval)
    return attempts


LOCAL_SEND_RETRY = dataclasses.replace(
    SEND_RETRY, maximum_attempts=attempts_within(SEND_RETRY, SEND_GIVE_UP)
)


@workflow.defn(name="NurtureWorkflow")
class NurtureWorkflow:
    @workflow.init
    def __init__(self, input: NurtureInput) -> None:
        self._input = input
        self._status = "active"
        self._position: int | None = 0
        self._next_send_at: datetime | None = None
        self._exit_reason: str | None = None
        # Pause and resume carry the API's timestamps, so the store and the workflow
        # compute the same resumed schedule.
        self._paused_at: datetime | None = None
        self._resumed_at: datetime | None = None
        # Held: a touchpoint fell due while the whole campaign was paused (since this
        # pause's moment); released by a campaign resume from then on, which may arrive
        # before the send's answer that holds it.
        self._held_since: datetime | None = None
        self._campaign_resumed_at: datetime | None = None

    @workflow.run
    async def run(self, input: NurtureInput) -> RecipientState:
        plan = input.plan
        touchpoints = plan.touchpoints
        position = 0
        due = timing.first_send_at(input.entered_at, touchpoints[0].send_time, plan.time_zone)
        while position < len(touchpoints):
            self._schedule(position, due)
            due = await self._sleep_until_due(position, due)
            if self._exit_reason is not None:
                break
            following = position + 1 if position + 1 < len(touchpoints) else None
            following_due = (
                timing.next_send_at(
                    due,
                    touchpoints[following].interval_days,
                    touchpoints[following].send_time,
                    plan.time_zone,
                )
                if following is not None
                else None
            )
            result = await self._send(position, due, following, following_due)
            if result.outcome is SendOutcome.LEFT:
                self._exit_reason = result.exit_reason or ExitReason.REMOVED.value
                break
            if result.outcome is SendOutcome.PAUSED:
                if result.campaign_paused_at is not None:
                    self._held_since = result.campaign_paused_at
                    if result.campaign_resumed_at is not None:
                        self._campaign_resumed(result.campaign_resumed_at)
                # The store said paused before our signal arrived: wait as if it had.
                elif self._paused_at is None:
                    self._paused_at = result.paused_at or workflow.now()
                continue
            if following is None or following_due is None:
                break
            position, due = following, following_due
        return await self._finish()

    async def _sleep_until_due(self, position: int, due: datetime) -> datetime:
        """Wait for `due`, through pauses; answers the (possibly moved) moment to send at."""
        tz = self._input.plan.time_zone
        send_time = self._input.plan.touchpoints[position].send_time
        while self._exit_reason is None:
            if self._held_since is not None:
                self._set_status("paused", position, due)
                await workflow.wait_condition(
                    lambda: self._released() or self._exit_reason is not None,
                    timeout_summary="campaign paused",
                )
                if self._exit_reason is not None or self._campaign_resumed_at is None:
                    break
                # What fell due goes at its send time on the first day after the resume
                # (store.campaign_status.release_at); a recipient pause that began and
                # ended meanwhile is over.
                due = timing.resume_send_at(timedelta(0), self._campaign_resumed_at, send_time, tz)
                self._held_since = None
                if self._resumed_at is not None:
                    self._paused_at = self._resumed_at = None
                self._schedule(position, due)
                continue
            if self._paused_at is not None:
                self._set_status("paused", position, due)
                await workflow.wait_condition(
                    lambda: self._resumed_at is not None or self._exit_reason is not None,
                    timeout_summary="paused",
                )
                if self._exit_reason is not None or self._resumed_at is None:
                    break
                due = timing.resume_send_at(due - self._paused_at, self._resumed_at, send_time, tz)
                self._paused_at = self._resumed_at = None
                self._schedule(position, due)
                continue
            wait = due - workflow.now()
            if wait <= timedelta(0):
                break
            try:
                await workflow.wait_condition(
                    lambda: self._paused_at is not None or self._exit_reason is not None,
                    timeout=wait,
                    timeout_summary=f"touchpoint {position + 1}",
                )
            except TimeoutError:
                pass
        return due

    def _released(self) -> bool:
        return (
            self._held_since is not None
            and self._campaign_resumed_at is not None
            and self._campaign_resumed_at >= self._held_since
        )

    async def _send(
        self, position: int, due: datetime, following: int | None, following_due: datetime | None
    ) -> SendResult:
        call = SendTouchpoint(
            enrolment_id=self._input.enrolment_id,
            run=self._input.run,
            position=position,
            scheduled_at=due,
            next_position=following,
            next_send_at=following_due,
        )
        # The send runs inside the workflow task that the due timer wakes (a local
        # activity): no activity task to schedule, poll, heartbeat and complete, and no
        # second workflow task, for each e-mail. A worker that dies or freezes meanwhile is
        # noticed by the workflow task's timeout (10 s), and the send's fencing keeps the
        # attempt that follows from sending twice. Histories from before keep their
        # activity tasks.
        local = workflow.patched(LOCAL_SEND)
        summary = f"send touchpoint {position + 1}"
        try:
            if local:
                return await workflow.execute_local_activity_method(
                    NurtureActivities.send_touchpoint,
                    call,
                    start_to_close_timeout=SEND_TIMEOUT,
                    schedule_to_close_timeout=SEND_GIVE_UP,
                    retry_policy=LOCAL_SEND_RETRY,
                    # Every retry waits on a timer of the workflow's (a retry is rare): it
                    # holds no workflow task open, and a time-skipping test skips it.
                    local_retry_threshold=timedelta(seconds=1),
                    summary=summary,
                )
            return await workflow.execute_activity_method(
                NurtureActivities.send_touchpoint,
                call,
                start_to_close_timeout=SEND_TIMEOUT,
                # The send heartbeats: a killed or frozen worker is noticed in seconds.
                heartbeat_timeout=SEND_HEARTBEAT,
                schedule_to_close_timeout=SEND_GIVE_UP,
                retry_policy=SEND_RETRY,
                summary=summary,
            )
        except (ActivityError, ApplicationError):
            # A day of retries did not get it out: record it as failed, and move on. (A
            # local activity's last failure can come unwrapped, as its own ApplicationError.)
            await workflow.execute_activity_method(
                NurtureActivities.record_send_failure,
                call,
                start_to_close_timeout=timedelta(minutes=1),
                summary=f"record touchpoint {position + 1} as failed",
            )
            return SendResult(outcome=SendOutcome.FAILED)

    async def _finish(self) -> RecipientState:
        if self._exit_reason is not None:
            self._set_status("exited", None, None)
        else:
            self._set_status("completed", None, None)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state()

    def _schedule(self, position: int, due: datetime) -> None:
        self._set_status("active", position, due)

    def _set_status(self, status: str, position: int | None, due: datetime | None) -> None:
        self._status, self._position, self._next_send_at = status, position, due
        workflow.upsert_search_attributes(
            [
                STATE.value_set(status),
                NEXT_SEND_AT.value_set(due) if due else NEXT_SEND_AT.value_unset(),
            ]
        )
        count = len(self._input.plan.touchpoints)
        campaign = self._input.campaign_id
        if status == "active" and position is not None and due is not None:
            label = timing.local_label(due, self._input.plan.time_zone)
            details = f"waits for touchpoint {position + 1} of {count}, due {label}"
        elif status == "paused" and position is not None and self._held_since is not None:
            details = (
                f"held: campaign {campaign} is paused; touchpoint {position + 1} of {count} "
                "goes out at its send time on the first day after the resume"
            )
        elif status == "paused" and position is not None:
            details = f"paused before touchpoint {position + 1} of {count}"
        elif status == "exited":
            details = f"left campaign {campaign}: {self._exit_reason}"
        else:
            details = f"completed campaign {campaign}: {count} touchpoints"
        workflow.set_current_details(details)

    @workflow.signal(name="exit")
    def exit(self, signal: ExitSignal) -> None:
        if signal.run is not None and signal.run != self._input.run:
            return
        if self._exit_reason is None:
            self._exit_reason = signal.reason.value

    @workflow.signal(name="pause")
    def pause(self, signal: PauseSignal) -> None:
        if self._paused_at is None:
            self._paused_at = signal.paused_at
            self._resumed_at = None

    @workflow.signal(name="resume")
    def resume(self, signal: ResumeSignal) -> None:
        if self._paused_at is not None and self._resumed_at is None:
            self._resumed_at = max(signal.resumed_at, self._paused_at)

    @workflow.signal(name="campaign_resumed")
    def campaign_resumed(self, signal: ResumeSignal) -> None:
        """Kept whatever the state: it may come before the send's answer that holds us."""
        self._campaign_resumed(signal.resumed_at)

    def _campaign_resumed(self, at: datetime) -> None:
        if self._campaign_resumed_at is None or at > self._campaign_resumed_at:
            self._campaign_resumed_at = at

    @workflow.query(name="state")
    def state(self) -> RecipientState:
        return RecipientState(
            status=self._status,
            next_position=self._position,
            next_send_at=self._next_send_at,
            exit_reason=self._exit_reason,
        )
