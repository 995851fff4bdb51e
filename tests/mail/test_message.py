"""The MIME message on the wire: every line within RFC 5322's 998, and what a reader's
client decodes is what we meant."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from mail.message import Envelope, build_message
from mail.rendering import RenderedEmail


def envelope(recipient_name: str = "Marie Curie") -> Envelope:
    return Envelope(
        sender_name="Ada Admin",
        sender_address="ada@acme.example",
        recipient_name=recipient_name,
        recipient_address="marie@candidates.example",
        message_id="<0123456789abcdef@nurture.test>",
        date=datetime(2030, 1, 1, 8, tzinfo=UTC),
        unsubscribe_url="https://nurture.test/unsubscribe/" + "t" * 150,
        unsubscribe_mailto="mailto:unsubscribe@nurture.test?subject=unsubscribe%20" + "t" * 150,
        campaign_id=7,
        is_test=False,
    )


def wire(envelope: Envelope, email: RenderedEmail) -> tuple[bytes, EmailMessage]:
    raw = build_message(envelope, email).as_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return raw, parsed


@pytest.mark.parametrize("subject", ["é" * 900, "Новости " * 110, "日本語" * 300, "Héllo 👋"])
def test_a_subject_that_is_not_ascii_is_sent_at_any_length_and_reads_back(subject: str) -> None:
    _, parsed = wire(envelope(), RenderedEmail(subject=subject, text="Hi", html=None))
    assert parsed["Subject"] == subject


@pytest.mark.parametrize(
    "name", ["Zoë O'Brien, Jr", 'Жанна "младшая" Д\'Арк', "Ясна " * 80, "Eve, Bob"]
)
def test_a_recipient_name_of_any_length_and_punctuation_names_one_mailbox(name: str) -> None:
    _, parsed = wire(envelope(name), RenderedEmail(subject="Hello", text="Hi", html=None))
    [mailbox] = parsed["To"].addresses
    assert mailbox.addr_spec == "marie@candidates.example"
    if len(name) < 100:  # a long one is folded, which may space it where it was cut
        assert mailbox.display_name == name


def test_the_unsubscribe_header_stays_whole_on_one_line() -> None:
    raw, parsed = wire(envelope(), RenderedEmail(subject="Hello", text="Hi", html=None))
    line = next(line for line in raw.split(b"\r\n") if line.startswith(b"List-Unsubscribe:"))
    assert line == b"List-Unsubscribe: <https://nurture.test/unsubscribe/" + b"t" * 150 + (
        b">, <mailto:unsubscribe@nurture.test?subject=unsubscribe%20" + b"t" * 150 + b">"
    )
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize(
    "text",
    [
        "A line of " + "words " * 300 + "\n\nthen the end.\n",  # one line past 998
        ("x" * 600 + "\f") * 3 + "\n",  # a form feed is no line break on the wire
        ".starts with a dot\n=equals and héllo\n",
    ],
)
def test_a_body_is_sent_within_the_line_limit_and_reads_back(text: str) -> None:
    html = f"<p>{text}</p>"
    _, parsed = wire(envelope(), RenderedEmail(subject="Hello", text=text, html=html))
    plain, rich = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None and rich is not None
    assert isinstance(plain, EmailMessage) and isinstance(rich, EmailMessage)
    # Line breaks are CRLF on the wire, whatever they were.
    assert plain.get_content().replace("\r\n", "\n") == text
    assert rich.get_content().replace("\r\n", "\n") == html
