"""Opens of campaign e-mails: whether a fetch of the pixel was a person or a machine, and
its record in `message_opens`.

A fetch is a machine's when it can be recognised as one: a mail-privacy proxy (Apple Mail
Privacy Protection fetches every image of every message as it arrives, with a bare
`Mozilla/5.0`; Google's and Yahoo's image proxies), a scanner or a script by its user
agent, or a fetch within seconds of delivery, sooner than a person opens anything. It is
recorded all the same, as a machine open with why, and counted apart from human opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from errors import NotFoundError
from store.models import Company, Message, MessageOpen, MessageSource

# Sooner than this after the peer's 250, a fetch is a scanner's (or a proxy's prefetch).
DELIVERY_SECONDS = 5
# A pixel fetched again and again (a reader's reloads, a loop) records about this many
# opens at most (fetches at the same moment may each see room for one more); the numbers
# count opened messages, so more rows would tell nothing.
MAX_OPENS_PER_MESSAGE = 20
USER_AGENT_CHARS = 300

# Apple Mail Privacy Protection's proxies send this user agent and nothing more.
_APPLE_PROXY = "Mozilla/5.0"
# Lower-case parts of user agents that name a proxy, a scanner or a script.
_MACHINES = (
    ("googleimageproxy", "Google's image proxy"),
    ("ggpht.com", "Google's image proxy"),
    ("yahoomailproxy", "Yahoo's image proxy"),
    ("barracuda", "a mail security scanner (Barracuda)"),
    ("mimecast", "a mail security scanner (Mimecast)"),
    ("proofpoint", "a mail security scanner (Proofpoint)"),
    ("messagelabs", "a mail security scanner (Symantec MessageLabs)"),
    ("bingpreview", "a link preview (BingPreview)"),
    ("python-", "a script (Python)"),
    ("curl/", "a script (curl)"),
    ("wget/", "a script (wget)"),
    ("go-http-client", "a script (Go)"),
    ("okhttp", "a script (OkHttp)"),
    ("headlesschrome", "a headless browser"),
    ("bot", "a robot"),
    ("crawler", "a robot"),
    ("spider", "a robot"),
    ("scanner", "a scanner"),
)


@dataclass(frozen=True)
class Verdict:
    machine: bool
    why: str | None


def classify(user_agent: str | None, opened_at: datetime, sent_at: datetime | None) -> Verdict:
    """A person's open, or a machine's with why. `sent_at` is None while the peer's 250
    is not recorded yet: a fetch then is sooner than any reader."""
    agent = (user_agent or "").strip()
    if not agent:
        return Verdict(True, "no user agent")
    if agent == _APPLE_PROXY:
        return Verdict(True, "Apple Mail Privacy Protection's proxy (user agent 'Mozilla/5.0')")
    lowered = agent.lower()
    for part, what in _MACHINES:
        if part in lowered:
            return Verdict(True, f"{what}: its user agent names '{part}'")
    if sent_at is None:
        return Verdict(True, "fetched before the delivery was recorded")
    if opened_at - sent_at < timedelta(seconds=DELIVERY_SECONDS):
        return Verdict(True, f"fetched within {DELIVERY_SECONDS} s of delivery")
    return Verdict(False, None)


@dataclass(frozen=True)
class RecordedOpen:
    id: int
    machine: bool
    why: str | None
    first_of_kind: bool


async def record_open(
    session: AsyncSession,
    company_id: int,
    message_id: int,
    *,
    user_agent: str | None,
    now: datetime,
) -> RecordedOpen | None:
    """Record a fetch of the pixel of the company's campaign e-mail `message_id` (the
    token named both); None when nothing is recorded: the company no longer tracks opens,
    or the message has its share of opens already. A message that is not there (erased,
    or no campaign e-mail) is NotFoundError."""
    found = (
        await session.execute(
            select(Message.campaign_id, Message.position, Message.sent_at, Company.open_tracking)
            .join(Company, Company.id == Message.company_id)
            .where(
                Message.company_id == company_id,
                Message.id == message_id,
                Message.source_kind == MessageSource.TOUCHPOINT,
            )
        )
    ).first()
    if found is None or found.campaign_id is None or found.position is None:
        raise NotFoundError(f"Message {message_id} does not exist.")
    if not found.open_tracking:
        return None
    seen = await session.scalar(select(func.count()).where(MessageOpen.message_id == message_id))
    if (seen or 0) >= MAX_OPENS_PER_MESSAGE:
        return None
    verdict = classify(user_agent, now, found.sent_at)
    values = {
        "company_id": company_id,
        "message_id": message_id,
        "campaign_id": found.campaign_id,
        "position": found.position,
        "opened_at": now,
        "machine": verdict.machine,
        "why": verdict.why,
        "user_agent": user_agent[:USER_AGENT_CHARS] if user_agent else None,
    }
    # The message's first of its kind, unless another fetch is (ux_message_opens_first):
    # two first fetches at the same moment make one first and one more.
    upsert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    first = await session.scalar(
        upsert(MessageOpen)
        .values(**values, first_of_kind=True)
        .on_conflict_do_nothing(
            index_elements=[MessageOpen.message_id, MessageOpen.machine],
            index_where=text("first_of_kind"),
        )
        .returning(MessageOpen.id)
    )
    if first is not None:
        return RecordedOpen(first, verdict.machine, verdict.why, first_of_kind=True)
    again = await session.scalar(
        insert(MessageOpen).values(**values, first_of_kind=False).returning(MessageOpen.id)
    )
    assert again is not None
    return RecordedOpen(again, verdict.machine, verdict.why, first_of_kind=False)
