"""The unsubscribe link of every e-mail: a POST unsubscribes (RFC 8058 one-click); a GET
only shows what will happen and asks to confirm, since mail scanners follow links."""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.deps import NowDep, SessionDep, SessionsDep, SettingsDep, WorkflowsDep
from api.errors import answers
from api.routers.events import tell_exits
from mail import links
from store.companies import get_company
from store.enrolments import end_campaigns
from workflows.contracts import ExitReason

router = APIRouter(prefix="/unsubscribe", tags=["unsubscribe"])

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport"
content="width=device-width, initial-scale=1"><title>{title}</title></head>
<body style="font-family:Helvetica,Arial,sans-serif;max-width:32rem;margin:3rem auto;
padding:0 1rem;color:#111827"><h1 style="font-size:1.4rem">{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status)


# A person's browser shows these pages; an erased record (404) or Temporal (503) answer
# JSON, like every other route.
_NOT_VALID: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "The link is not valid (altered or cut short): a page saying so",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
}

_INVALID = (
    "This unsubscribe link is not valid",
    "<p>It may have been altered. Use the link from the e-mail itself.</p>",
)


@router.get("/{token}", response_class=HTMLResponse, responses={**_NOT_VALID, **answers(404)})
async def confirm_page(token: str, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    secret = settings.signing_secret.get_secret_value()
    signed = links.verify_unsubscribe(secret, token)
    if signed is None:
        return _page(*_INVALID, status=400)
    async with session.begin():
        company = await get_company(session, signed.company_id)
    action = escape(links.unsubscribe_url(settings.public_base_url, token))
    return _page(
        f"Unsubscribe from {company.name}",
        f"<p>You will no longer receive campaign e-mails from {escape(company.name)}: "
        "every campaign you are in stops at once.</p>"
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit" style="font-size:1rem;padding:.6rem 1.2rem">'
        "Unsubscribe</button></form>",
    )


@router.post("/{token}", response_class=HTMLResponse, responses={**_NOT_VALID, **answers(404, 503)})
async def unsubscribe(
    token: str,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> HTMLResponse:
    """One click: the candidate leaves every campaign of the company, for good."""
    signed = links.verify_unsubscribe(settings.signing_secret.get_secret_value(), token)
    if signed is None:
        return _page(*_INVALID, status=400)
    if signed.candidate_id == links.TEST_CANDIDATE:
        return _page("This was a test e-mail", "<p>Nobody was unsubscribed.</p>")
    async with session.begin():
        company = await get_company(session, signed.company_id)
        ended = await end_campaigns(
            session, signed.company_id, signed.candidate_id, ExitReason.UNSUBSCRIBED, now
        )
    await tell_exits(
        workflows, sessions, settings, signed.company_id, ended, signed.candidate_id,
        ExitReason.UNSUBSCRIBED,
    )  # fmt: skip
    pending = sum(1 for e in ended if e.position is not None)
    cancelled = (
        f" {pending} pending e-mail{'s' if pending != 1 else ''} cancelled." if pending else ""
    )
    return _page(
        "You are unsubscribed",
        f"<p>You will receive no more campaign e-mails from {escape(company.name)}.{cancelled}</p>",
    )
