"""Signed links: an open token names one message and is good for nothing else; the pixel
goes in the branded HTML part only."""

from __future__ import annotations

import dataclasses

from mail import links
from mail.rendering import Brand, render_email, sample_context

SECRET = "a-secret"
BRAND = Brand("Acme", None, "#1f2937", "#2563eb")


def test_an_open_token_names_its_message_and_cannot_be_turned_into_another() -> None:
    token = links.sign_open(SECRET, 3, 41)
    assert links.verify_open(SECRET, token) == links.OpenToken(company_id=3, message_id=41)
    company, message, signature = token.split(".")
    for forged in (
        f"{company}.42.{signature}",
        f"4.{message}.{signature}",
        f"{company}.{message}.{signature[:-1]}",
        links.sign_open("another-secret", 3, 41),
        # The same ids signed for unsubscribing, and the other way round.
        links.sign_unsubscribe(SECRET, 3, 41),
        "3.41",
        "",
        "3.٤١.x",
    ):
        assert links.verify_open(SECRET, forged) is None, forged
    assert links.verify_unsubscribe(SECRET, token) is None
    assert links.open_pixel_url("https://n.test/", token) == f"https://n.test/opens/{token}"


def test_the_unsubscribe_token_is_signed_as_before() -> None:
    # Links in e-mails already sent keep working: the signature did not change.
    assert links.sign_unsubscribe(SECRET, 1, 2) == "1.2.bx7WghciYKZ_tdmH2T-HskeqrT2ZXkvf8yZPeCNVrsI"


def test_the_pixel_goes_in_the_branded_html_part_only() -> None:
    context = dataclasses.replace(sample_context([]), open_pixel_url="https://n.test/opens/1.2.sig")
    branded = render_email("Hi", "Hello", True, context, BRAND)
    assert branded.html is not None
    assert branded.html.count('<img src="https://n.test/opens/1.2.sig" width="1" height="1"') == 1
    assert "opens" not in branded.text
    plain = render_email("Hi", "Hello", False, context, BRAND)
    assert plain.html is None and "opens" not in plain.text
    untracked = render_email("Hi", "Hello", True, sample_context([]), BRAND)
    assert untracked.html is not None and "/opens/" not in untracked.html
