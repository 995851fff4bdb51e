"""What the API tests report at the end of a run: the schemathesis figures."""

from __future__ import annotations

import pytest

# Lines a test leaves for the summary: `pytest -q` shows no output of a passing test.
SUMMARY = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in terminalreporter.config.stash.get(SUMMARY, []):
        terminalreporter.write_line(line)
