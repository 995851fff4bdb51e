"""Touchpoint templates: which variables exist, the check at save time, and rendering.

Subjects and bodies are Jinja2 templates in a sandbox with StrictUndefined. The body is
text; the branded layout (HTML, autoescaped) wraps it with the company's logo and colours.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateSyntaxError,
    meta,
    nodes,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from errors import ValidationError

TEMPLATES = Path(__file__).resolve().parent / "templates"

VARIABLES = {
    "first_name": "the candidate's first name",
    "last_name": "the candidate's last name",
    "company_name": "the company's name",
    "sender_name": "the sender's name",
    "sender_title": "the sender's title",
    "unsubscribe_url": "the candidate's one-click unsubscribe link",
    "fields": "the candidate's custom fields, as fields.<name>",
}

_text = SandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_layouts = SandboxedEnvironment(
    loader=FileSystemLoader(TEMPLATES),
    undefined=StrictUndefined,
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
)
_URL = re.compile(r"https?://[^\s<>\"']+")


def check_template(source: str, what: str, custom_fields: list[str]) -> None:
    """Refuse a template that does not parse or names a variable we do not have."""
    try:
        tree = _text.parse(source)
    except TemplateSyntaxError as error:
        raise ValidationError(f"The {what} is not a valid template: {error.message}.") from None
    for name in sorted(meta.find_undeclared_variables(tree)):
        if name not in VARIABLES:
            known = ", ".join(sorted(VARIABLES))
            raise ValidationError(
                f"The {what} uses the unknown variable '{name}'; known variables are {known}."
            )
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name == "fields"):
            continue
        key = node.attr if isinstance(node, nodes.Getattr) else _constant(node.arg)
        if key not in custom_fields:
            declared = ", ".join(custom_fields) or "none"
            raise ValidationError(
                f"The {what} uses the unknown custom field 'fields.{key}'; "
                f"this company declares {declared}."
            )
    # Names are not all: `first_name.nope` or `1/0` only fail when rendered, so render
    # once with sample values now rather than fail at every send.
    try:
        _text.from_string(source).render(sample_context(custom_fields).variables())
    except Exception as error:
        raise ValidationError(f"The {what} cannot be rendered: {error}.") from None


def _constant(node: nodes.Node) -> str | None:
    return str(node.value) if isinstance(node, nodes.Const) else None


def header_text(value: str) -> str:
    """A value fit for one header line: no control characters (so no line break) and no
    RFC 2047 opener, which a MIME library would decode back into one."""
    cleaned = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in value)
    return " ".join(cleaned.replace("=?", "= ?").split())


@dataclass(frozen=True)
class Brand:
    name: str
    logo_url: str | None
    primary_color: str
    accent_color: str


@dataclass(frozen=True)
class RenderContext:
    first_name: str
    last_name: str
    company_name: str
    sender_name: str
    sender_title: str
    unsubscribe_url: str
    fields: dict[str, Any] = field(default_factory=dict)

    def variables(self) -> dict[str, Any]:
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "company_name": self.company_name,
            "sender_name": self.sender_name,
            "sender_title": self.sender_title,
            "unsubscribe_url": self.unsubscribe_url,
            "fields": self.fields,
        }


def sample_context(
    custom_fields: list[str], unsubscribe_url: str = "https://example.invalid/u"
) -> RenderContext:
    """Values for a test send or a template check: nobody's personal data."""
    return RenderContext(
        first_name="Alex",
        last_name="Sample",
        company_name="Company",
        sender_name="Sender",
        sender_title="Title",
        unsubscribe_url=unsubscribe_url,
        fields={name: f"[{name}]" for name in custom_fields},
    )


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None


def render_email(
    subject: str, body: str, branded: bool, context: RenderContext, brand: Brand
) -> RenderedEmail:
    variables = context.variables()
    rendered_subject = header_text(_text.from_string(subject).render(variables))
    text = _text.from_string(body).render(variables).strip()
    text_part = _layouts.get_template("plain.txt.j2").render(
        body=text, unsubscribe_url=context.unsubscribe_url, company_name=context.company_name
    )
    if not branded:
        return RenderedEmail(subject=rendered_subject, text=text_part, html=None)
    html = _layouts.get_template("branded.html.j2").render(
        subject=rendered_subject,
        paragraphs=_paragraphs(text),
        brand=brand,
        unsubscribe_url=context.unsubscribe_url,
    )
    return RenderedEmail(subject=rendered_subject, text=text_part, html=html)


def _paragraphs(text: str) -> list[Markup]:
    """Text to HTML paragraphs: escaped, line breaks kept, links made clickable."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        if not block.strip():
            continue
        html = str(escape(block.strip()))
        html = _URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', html)
        out.append(Markup(html.replace("\n", "<br>\n")))
    return out
