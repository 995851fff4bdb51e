"""The template processes: a job past the time limit, out of memory, cancelled or whose
process dies fails alone, and the pool goes on with a fresh process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from errors import UnavailableError, ValidationError
from mail.rendering import Brand, RenderContext, RenderError, sample_context
from mail.sandbox import TemplateSandbox

SLOW = '{{ "ab"|slice(100000000)|select|list }}'  # within every count, ~30 s of CPU
ROOT = Path(__file__).resolve().parents[2]
CONTEXT = RenderContext(
    first_name="Marie",
    last_name="Curie",
    company_name="Acme",
    sender_name="Ada Admin",
    sender_title="Head of Talent",
    unsubscribe_url="https://nurture.test/unsubscribe/t",
    fields={"role": "physicist"},
)
BRAND = Brand("Acme", "https://cdn.example/logo.png", "#1f2937", "#2563eb")
SUBJECT = "Hello {{ first_name }}, a {{ fields.role }} role"
BODY = (
    "Dear {{ first_name }} {{ last_name }},\n\n"
    '{% for w in ["one", "two"] %}{{ loop.index }}. {{ w|upper }}\n{% endfor %}\n'
    "See https://acme.example/jobs\n\n"
    "{{ sender_name }}, {{ sender_title }} at {{ company_name }}\n"
)


def template_processes(parent: int | None = None) -> set[int]:
    """The template children of `parent` (this test process), found as `ps` would (zombies
    excluded)."""
    parent = os.getpid() if parent is None else parent
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"mail.sandbox" in command:
            found.add(int(stat.parent.name))
    return found


@dataclass
class Pool:
    """A pool of one process, so that a test knows which process runs its job."""

    sandbox: TemplateSandbox
    others: set[int]  # the processes of other pools (the session's)

    def processes(self) -> set[int]:
        return template_processes() - self.others


@pytest.fixture
async def one() -> AsyncIterator[Pool]:
    others = template_processes()
    async with TemplateSandbox(1) as sandbox:
        yield Pool(sandbox, others)


async def check(sandbox: TemplateSandbox, source: str) -> str | None:
    try:
        await sandbox.check(source, "body", "touchpoint 2", ["role"])
    except ValidationError as refused:
        return str(refused)
    return None


async def test_a_render_gives_the_email_it_gave_before_the_sandbox(
    templates: TemplateSandbox,
) -> None:
    plain = await templates.render(SUBJECT, BODY, False, CONTEXT, BRAND)
    branded = await templates.render(SUBJECT, BODY, True, CONTEXT, BRAND)
    text = (
        "Dear Marie Curie,\n\n1. ONE\n2. TWO\n\nSee https://acme.example/jobs\n\n"
        "Ada Admin, Head of Talent at Acme\n\n--\n"
        "You receive this e-mail from Acme. To stop receiving these e-mails:\n"
        "https://nurture.test/unsubscribe/t"
    )
    assert (plain.subject, plain.text, plain.html) == ("Hello Marie, a physicist role", text, None)
    assert (branded.subject, branded.text) == (plain.subject, text)
    assert branded.html is not None
    assert (
        '<p style="margin:0 0 16px 0;">1. ONE<br>\n2. TWO</p>\n'
        '<p style="margin:0 0 16px 0;">See <a href="https://acme.example/jobs">'
        "https://acme.example/jobs</a></p>"
    ) in branded.html
    assert "<title>Hello Marie, a physicist role</title>" in branded.html


async def test_a_job_past_the_time_limit_is_killed_and_its_process_replaced(
    one: Pool,
) -> None:
    [before] = one.processes()
    assert await check(one.sandbox, SLOW) == (
        "The body of touchpoint 2 takes longer than 2 seconds to render."
    )
    assert one.processes() == set()  # killed, and reaped
    assert await check(one.sandbox, "Hi {{ first_name }}") is None
    [after] = one.processes()
    assert after != before


async def test_a_slow_template_fails_no_other_job(templates: TemplateSandbox) -> None:
    slow = asyncio.create_task(check(templates, SLOW))
    await asyncio.sleep(0.2)
    renders = [await templates.render(SUBJECT, BODY, False, CONTEXT, BRAND) for _ in range(20)]
    assert not slow.done()
    assert {r.subject for r in renders} == {"Hello Marie, a physicist role"}
    assert "takes longer than 2 seconds" in (await slow or "")


async def test_a_process_that_dies_fails_only_its_own_job(one: Pool) -> None:
    [process] = one.processes()
    job = asyncio.create_task(check(one.sandbox, SLOW))
    await asyncio.sleep(0.3)
    os.kill(process, signal.SIGKILL)
    assert await job == (
        "The body of touchpoint 2 cannot be rendered: the process rendering it ended (SIGKILL)."
    )
    email = await one.sandbox.render(SUBJECT, BODY, False, CONTEXT, BRAND)
    assert email.subject == "Hello Marie, a physicist role"


async def test_a_cancelled_job_leaves_no_answer_behind_for_the_next(one: Pool) -> None:
    job = asyncio.create_task(check(one.sandbox, SLOW))
    await asyncio.sleep(0.3)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert await check(one.sandbox, "{{ nickname }}") == (
        "The body of touchpoint 2 uses the unknown variable 'nickname'; known variables are "
        "company_name, fields, first_name, last_name, sender_name, sender_title, "
        "unsubscribe_url."
    )


@pytest.mark.parametrize(
    "source",
    [
        "{{ first_name|center(1000000000) }}",
        '{% set ns = namespace(x="ab") %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}'
        "{% endfor %}{{ ns.x|length }}",
    ],
)
async def test_memory_past_the_cap_fails_the_job_naming_it(one: Pool, source: str) -> None:
    [process] = one.processes()
    assert await check(one.sandbox, source) == (
        "The body of touchpoint 2 uses more than 512 MiB of memory."
    )
    assert await check(one.sandbox, "Hi {{ first_name }}") is None
    assert one.processes() == {process}  # the process recovered: nothing to replace


async def test_a_render_refused_at_send_says_why(templates: TemplateSandbox) -> None:
    context = sample_context(["role"])
    with pytest.raises(RenderError) as refused:
        await templates.render("Hi", "{{ 10 ** (10 ** 7) }}", True, context, BRAND)
    assert str(refused.value) == "The body computes a number beyond ±10^15."


async def test_a_send_past_the_time_limit_fails_saying_so(one: Pool) -> None:
    with pytest.raises(RenderError) as refused:
        await one.sandbox.render("Hi", SLOW, False, sample_context(["role"]), BRAND)
    # Two templates, each of which its check saw within 2 seconds.
    assert str(refused.value) == "The e-mail takes longer than 4 seconds to render."
    email = await one.sandbox.render(SUBJECT, BODY, False, CONTEXT, BRAND)
    assert email.subject == "Hello Marie, a physicist role"


async def test_closing_ends_every_process() -> None:
    others = template_processes()
    sandbox = TemplateSandbox(2)
    await sandbox.start()
    assert len(template_processes() - others) == 2
    await sandbox.close()
    assert template_processes() - others == set()
    with pytest.raises(Exception, match="shut down"):
        await sandbox.check("Hi", "body", "touchpoint 1", [])


async def test_a_job_that_finds_every_process_busy_is_refused_after_the_wait() -> None:
    async with TemplateSandbox(1, wait_seconds=0.5) as sandbox:
        slow = asyncio.create_task(check(sandbox, SLOW))
        await asyncio.sleep(0.2)
        with pytest.raises(UnavailableError) as refused:
            await sandbox.check("Hi", "body", "touchpoint 1", [])
        assert str(refused.value) == "Every template process is busy; try again in a moment."
        assert not slow.done()  # refused while the process was still busy, not after
        assert "takes longer than 2 seconds" in (await slow or "")
        assert await check(sandbox, "Hi {{ first_name }}") is None


# A service that starts a pool and checks a slow template until it is killed.
_KILLED_SERVICE = """
import asyncio, sys
from mail.sandbox import TemplateSandbox

async def main() -> None:
    async with TemplateSandbox(1) as sandbox:
        job = asyncio.create_task(sandbox.check(sys.argv[1], "body", "touchpoint 1", []))
        await asyncio.sleep(0.5)
        print("rendering", flush=True)
        await job

asyncio.run(main())
"""


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux's")
async def test_a_process_whose_service_is_killed_mid_render_ends_with_it() -> None:
    service = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_SERVICE,
        SLOW,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert service.stdout is not None
    assert await service.stdout.readline() == b"rendering\n"
    [child] = template_processes(service.pid)
    service.kill()
    await service.wait()
    for _ in range(100):  # 5 s; the render alone would go on for about 30
        if not running(child):
            break
        await asyncio.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the template process outlived the service that started it")
