"""The unsubscribe link: a POST unsubscribes from every campaign; a GET never does; a
tampered link or another candidate's is refused."""

from __future__ import annotations

from datetime import timedelta

import httpx
from temporalio.testing import WorkflowEnvironment

from config import Settings
from mail import links
from store.session import SessionFactory
from tests.builders import add_candidate, enrol, saved_campaign, touchpoint
from tests.conftest import Inbox, Tenant
from tests.snapshot import unchanged


async def test_one_click_unsubscribes_from_every_campaign_of_the_company(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant,
    inbox: tuple[Inbox, int], sessions: SessionFactory, settings: Settings,
) -> None:  # fmt: skip
    mail, _ = inbox
    plan = [touchpoint(tenant, "One"), touchpoint(tenant, "Two", interval_days=3)]
    first = await saved_campaign(api, tenant, plan)
    second = await saved_campaign(api, tenant, plan)
    candidate = await add_candidate(api, tenant)
    neighbour = await add_candidate(api, tenant, first_name="Pierre", email="pierre@example.org")
    for campaign in (first, second):
        await enrol(api, tenant, campaign, candidate)
    await enrol(api, tenant, first, neighbour)
    await env.sleep(timedelta(days=2))
    await mail.wait_for(3)
    message = mail.to("marie@example.org")[0]
    url = message["List-Unsubscribe"].split(",")[0].strip("<> ")
    token = url.rsplit("/", 1)[1]

    secret = settings.signing_secret.get_secret_value()
    signature = token.rsplit(".", 1)[1]
    company, _, _ = token.split(".")
    tampered = f"{company}.{neighbour}.{signature}"
    forged = links.sign_unsubscribe("not-our-secret", tenant.company_id, candidate)
    async with unchanged(sessions):
        page = await api.get(url)
        assert page.status_code == 200
        assert "Unsubscribe from Acme" in page.text and 'method="post"' in page.text
        for bad in (tampered, forged, "1.2", "garbage", "1.2.%C3%A9"):
            refused = await api.post(f"/unsubscribe/{bad}", content=b"List-Unsubscribe=One-Click")
            assert refused.status_code == 400 and "not valid" in refused.text
    assert links.verify_unsubscribe(secret, token) is not None

    clicked = await api.post(
        url,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert clicked.status_code == 200 and "You are unsubscribed" in clicked.text
    recipients = [
        (await api.get(f"/campaigns/{c}/recipients", headers=tenant.admin)).json()["items"]
        for c in (first, second)
    ]
    mine = [r for items in recipients for r in items if r["candidate_id"] == candidate]
    assert [(r["status"], r["exit_reason"]) for r in mine] == [("exited", "unsubscribed")] * 2
    theirs = [r for r in recipients[0] if r["candidate_id"] == neighbour]
    assert theirs[0]["status"] == "active"

    await env.sleep(timedelta(days=5))
    await mail.wait_for(4)
    assert [m["Subject"] for m in mail.to("marie@example.org")] == ["One", "One"]
    assert [m["Subject"] for m in mail.to("pierre@example.org")] == ["One", "Two"]
    again = await api.post(
        f"/campaigns/{first}/recipients",
        json={"candidate_id": candidate, "re_enrol": True},
        headers=tenant.admin,
    )
    assert again.status_code == 409 and "unsubscribed" in again.json()["detail"]
