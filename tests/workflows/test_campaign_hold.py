"""A recipient held by a campaign pause, with the send activity played by the test: the
campaign's resume releases it whichever comes first, the resume's signal or the send's
answer that holds it; a resume older than the pause releases nothing."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from worker import workflow_runner
from workflows import timing
from workflows.contracts import (
    NurtureInput,
    NurturePlan,
    RecipientState,
    ResumeSignal,
    SendOutcome,
    SendResult,
    SendTouchpoint,
    TouchpointPlan,
)
from workflows.nurture import NurtureWorkflow

PARIS = "Europe/Paris"


class _Store:
    """The send: held once (the campaign paused at `paused_at`), then sent."""

    def __init__(self, paused_at: datetime) -> None:
        self.paused_at = paused_at
        self.calls: list[SendTouchpoint] = []

    @activity.defn(name="send_touchpoint")
    async def send_touchpoint(self, call: SendTouchpoint) -> SendResult:
        self.calls.append(call)
        if len(self.calls) == 1:
            return SendResult(
                SendOutcome.PAUSED, paused_at=self.paused_at, campaign_paused_at=self.paused_at
            )
        return SendResult(SendOutcome.SENT)

    @activity.defn(name="record_send_failure")
    async def record_send_failure(self, call: SendTouchpoint) -> None:
        raise AssertionError("no send fails here")


def _input(entered_at: datetime) -> NurtureInput:
    plan = NurturePlan(
        touchpoints=(TouchpointPlan(0, 0, 9, 0), TouchpointPlan(1, 3, 9, 0)),
        time_zone=PARIS,
        exit_options=(),
    )
    return NurtureInput(1, 1, 1, 1, 1, entered_at, plan)


async def _run(env: WorkflowEnvironment, store: _Store, resumed_at: datetime) -> RecipientState:
    queue = f"hold-{uuid.uuid4().hex[:8]}"
    now = await env.get_current_time()
    async with Worker(
        env.client, task_queue=queue, workflows=[NurtureWorkflow],
        activities=[store.send_touchpoint, store.record_send_failure],
        workflow_runner=workflow_runner(),
    ):  # fmt: skip
        handle = await env.client.start_workflow(
            NurtureWorkflow.run, _input(now), id=f"nurture/hold/{queue}", task_queue=queue
        )
        # The resume's signal comes before the send that holds the recipient.
        await handle.signal(NurtureWorkflow.campaign_resumed, ResumeSignal(resumed_at))
        await env.sleep(timedelta(days=6))
        state = await handle.query(NurtureWorkflow.state)
        if state.status != "completed":
            await handle.terminate()
    return state


async def test_a_resume_that_comes_before_the_hold_still_releases_it(
    env: WorkflowEnvironment,
) -> None:
    now = await env.get_current_time()
    store = _Store(paused_at=now - timedelta(hours=1))
    state = await _run(env, store, resumed_at=now)
    first_due = timing.first_send_at(now, time(9), PARIS)
    assert [(c.position, c.scheduled_at) for c in store.calls] == [
        (0, first_due),
        (0, first_due),  # released at once: the resume is after the pause
        (1, timing.next_send_at(first_due, 3, time(9), PARIS)),
    ]
    assert state.status == "completed"


async def test_a_resume_older_than_the_pause_releases_nothing(env: WorkflowEnvironment) -> None:
    now = await env.get_current_time()
    store = _Store(paused_at=now - timedelta(hours=1))
    state = await _run(env, store, resumed_at=now - timedelta(hours=2))
    assert len(store.calls) == 1
    assert (state.status, state.next_position) == ("paused", 0)
