"""Histories recorded by earlier versions still replay on today's workflow code."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from worker import WORKFLOWS, workflow_runner

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    names = {path.name for path in HISTORIES}
    assert {
        "nurture-v1-completed.json",
        "nurture-v1-paused.json",
        "nurture-v1-applied.json",
        "campaign-test-v1-refused-send.json",
        "stage-actions-v1-done.json",
        "stage-actions-v1-cancelled.json",
        "stage-actions-v1-failed.json",
        "stage-actions-v2-replied.json",
        "nurture-v4-held.json",
    } <= names


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.name)
async def test_a_recorded_history_replays_without_nondeterminism(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())  # noqa: ASYNC240
    replayer = Replayer(workflows=list(WORKFLOWS), workflow_runner=workflow_runner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.name)
def test_a_history_holds_no_personal_data(path: Path) -> None:
    # The recorder's candidates are c@, p@ and a@example.org; subjects One, Two, Three.
    text = path.read_text()
    assert "example.org" not in text and "Acme" not in text and "Three" not in text
