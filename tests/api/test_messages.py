"""What a person reads when a request is wrong: one sentence that says what to fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from config import ConfigurationError, Settings
from tests.builders import BODY, CONSENT
from tests.conftest import Tenant


async def test_a_body_that_is_not_json_says_where_it_breaks(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await api.post(
        "/candidates",
        content=b'{"first_name": "Ada",}',
        headers={**tenant.service, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "Invalid request: the body is not valid JSON at character 21 "
        "(expecting property name enclosed in double quotes)."
    )


async def test_a_body_sent_without_its_content_type_says_to_send_one(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    for content_type in (None, "text/plain"):
        headers = dict(tenant.service)
        if content_type:
            headers["Content-Type"] = content_type
        response = await api.post("/candidates", content=b'{"first_name": "Ada"}', headers=headers)
        assert response.status_code == 422
        assert response.json()["detail"] == (
            "Invalid request: the body must be a JSON object sent with "
            "'Content-Type: application/json'."
        )
    missing = await api.post("/candidates", headers=tenant.service)
    assert (
        missing.json()["detail"] == "Invalid request: the request needs a JSON object as its body."
    )


async def test_refusals_read_as_one_sentence(api: httpx.AsyncClient, tenant: Tenant) -> None:
    """No doubled period, no capital after a colon, wherever a clause is put in a sentence."""
    first: dict[str, Any] = {
        "subject": "Hi",
        "body": BODY,
        "sender_user_id": tenant.admin_id,
        "send_time": "9h",
    }
    campaign = {"name": "x", "touchpoints": [first]}
    answers = [
        await api.post("/campaigns", json=campaign, headers=tenant.admin),
        await api.post(
            "/candidates", json={"first_name": "A", "email": "x@"}, headers=tenant.service
        ),
        await api.post(
            "/candidates", json={"first_name": "A", "email": "josé@x.org"}, headers=tenant.service
        ),
        await api.post("/candidates", json={"first_name": ""}, headers=tenant.service),
    ]
    no_email = (
        await api.post("/candidates", json={"first_name": "A"}, headers=tenant.service)
    ).json()["id"]
    first["send_time"] = "09:00"
    created = (await api.post("/campaigns", json=campaign, headers=tenant.admin)).json()["id"]
    await api.post(f"/campaigns/{created}/save", headers=tenant.admin)
    answers.append(
        await api.post(
            f"/campaigns/{created}/recipients",
            json={"candidate_id": no_email},
            headers=tenant.admin,
        )
    )
    for answer in answers:
        assert 400 <= answer.status_code < 500, answer.text
        detail = answer.json()["detail"]
        assert ".." not in detail, detail
        assert not re.search(r": [A-Z][a-z]", detail), detail
        assert "Value error" not in detail, detail
        assert detail.endswith("."), detail


async def test_a_mailbox_file_name_too_long_for_a_file_system_is_not_found(
    api: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    settings.mail_sink_dir = tmp_path
    (tmp_path / "one.eml").write_bytes(b"Subject: hi\r\n\r\nbody\r\n")
    assert (await api.get("/mailbox/one.eml")).status_code == 200
    for name in ("a" * 250 + ".eml", "nope.txt", "nope.eml"):
        response = await api.get(f"/mailbox/{name}")
        assert response.status_code == 404, response.text
        assert "in the mail sink" in response.json()["detail"]
    nul = await api.get("/mailbox/a%00.eml")
    assert nul.status_code == 404, nul.text
    too_long = await api.get(f"/mailbox/{'a' * 300}.eml")
    assert too_long.status_code == 422 and "file" in too_long.json()["detail"]


def test_the_development_signing_secret_is_refused_outside_development() -> None:
    with pytest.raises(ConfigurationError, match="NURTURE_SIGNING_SECRET is the development"):
        create_app(Settings(environment="production"))
    with pytest.raises(ConfigurationError, match="shorter than 32 characters"):
        create_app(Settings(environment="production", signing_secret="short"))
    assert create_app(Settings(environment="production", signing_secret="s" * 32)) is not None
    assert create_app(Settings(environment="development")) is not None


async def test_a_nul_character_is_refused_in_any_text_on_every_store(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    for body in (
        {"first_name": "Ada\x00"},
        {"first_name": "Ada", "custom_fields": {"role": "x\x00"}},
        {"first_name": "Ada", "consent": {**CONSENT, "method": "\x00"}},
    ):
        response = await api.post("/candidates", json=body, headers=tenant.service)
        assert response.status_code == 422, response.text
        assert "contains a NUL character" in response.json()["detail"]
