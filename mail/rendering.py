"""Touchpoint templates: their variables and limits, the check at save time, and rendering.

Subjects and bodies are Jinja2 templates in a sandbox with StrictUndefined, held to LIMITS
while they render: loops, range(), numbers, sizes and nesting are counted here; time and
memory by the child process of `mail.sandbox`, the only place this code
runs a template. The body is text; the branded layout (HTML, autoescaped) wraps it with
the company's logo and colours.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateSyntaxError,
    Undefined,
    meta,
    nodes,
    pass_context,
    select_autoescape,
)
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from errors import ValidationError, clause

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
UNSUBSCRIBE = "unsubscribe_url"


@dataclass(frozen=True)
class TemplateLimits:
    """What one template may take, at save and at send alike. README.md ("Template
    limits") lists the same values; api/schemas.py takes the source sizes from here."""

    subject_chars: int = 500
    body_chars: int = 20_000
    rendered_subject_chars: int = 900
    rendered_body_chars: int = 100_000
    render_seconds: float = 2.0
    loop_iterations: int = 1_000
    range_numbers: int = 1_000
    number_digits: int = 15
    nesting_levels: int = 50
    field_value_chars: int = 1_000
    memory_mib: int = 512


LIMITS = TemplateLimits()

Part = Literal["subject", "body"]
_SOURCE_CHARS: dict[Part, int] = {"subject": LIMITS.subject_chars, "body": LIMITS.body_chars}
_OUTPUT_CHARS: dict[Part, int] = {
    "subject": LIMITS.rendered_subject_chars,
    "body": LIMITS.rendered_body_chars,
}
_LARGEST_NUMBER = 10**LIMITS.number_digits
_NUMBER = f"computes a number beyond ±10^{LIMITS.number_digits}"
_NESTING = f"nests deeper than {LIMITS.nesting_levels} levels"
_SEQUENCE = f"builds a text or list longer than {LIMITS.rendered_body_chars:,} items"
# What Python's default repr prints for an object with no text of its own (`<jinja2.utils.
# Cycler object at 0x7f...>`, `<built-in method upper of str object at 0x7f...>`, `<function
# f at 0x7f...>`, `<bound method ...>`): a template that prints one shows an e-mail reader
# our memory. Only those shapes: "meet at 0x10>" is text.
_ADDRESS = re.compile(
    r"<(?:[\w.]+ object(?: [\w.<>]+)?|built-in method \w+ of [\w.]+ object|function [\w.<>]+)"
    r" at 0x[0-9a-fA-F]+>"
    r"|<bound method [\w.<>]+ of "
)


class RenderError(Exception):
    """A touchpoint that cannot be rendered for this recipient; the message says why."""


class _RefusalError(Exception):
    """Why a template is refused, as the rest of a sentence that starts "The body of
    touchpoint 2 ..." at save time and "The body ..." at send time."""


class _Render:
    """One render in progress: the loop iterations it has left, and its template as written
    (to name what it printed)."""

    def __init__(self, tree: nodes.Template) -> None:
        self.tree = tree
        self.loops_left = LIMITS.loop_iterations

    def count(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            if self.loops_left <= 0:
                raise _RefusalError(
                    f"loops more than {LIMITS.loop_iterations:,} times (all its loops together)"
                )
            self.loops_left -= 1
            yield item

    def printed(self, value: Any, context: Context) -> _RefusalError:
        """`{{ first_name.upper }}`: say what to write instead, in the template's own words
        (`cycler`, not the class `Cycler` it names)."""
        written = [
            spelled
            for output in self.tree.find_all(nodes.Output)
            for expression in output.nodes
            if (spelled := _spelled(expression))
        ]
        call = next((w for w in written if _resolves_to(context, w, value)), None)
        if call is None:
            # A name the context does not hold (a loop's variable): match its last part.
            name = getattr(value, "__name__", None) or getattr(value, "name", None)
            if not isinstance(name, str):
                return _RefusalError("prints a Python object instead of a value")
            call = next((w for w in written if w.rsplit(".", 1)[-1] == name), name)
        owner = getattr(value, "__self__", None)
        kind = "method" if owner is not None and not isinstance(owner, ModuleType) else "function"
        name = call.rsplit(".", 1)[-1]
        return _RefusalError(f"prints the {kind} '{name}' instead of calling it: write {call}()")


_RENDER: ContextVar[_Render] = ContextVar("render")


def _resolves_to(context: Context, written: str, value: Any) -> bool:
    """Whether `first_name.upper`, read in this context, is `value`."""
    head, *attributes = written.split(".")
    try:
        found = context.resolve_or_missing(head)
        for attribute in attributes:
            found = context.environment.getattr(found, attribute)
        return bool(found is value or found == value)
    except Exception:  # an undefined name, or a value that refuses to be read or compared
        return False


def _spelled(node: nodes.Node) -> str | None:
    """`first_name.upper` as written, for a name or a chain of attributes."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        owner = _spelled(node.node)
        return f"{owner}.{node.attr}" if owner else None
    return None


class _TemplateEnvironment(SandboxedEnvironment):
    """Jinja's sandbox with every operator and every loop of a template held to LIMITS."""

    intercepted_binops = frozenset(SandboxedEnvironment.default_binop_table)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _refuse_before(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, int | float) and abs(result) > _LARGEST_NUMBER:
            raise _RefusalError(_NUMBER)
        if isinstance(result, str | list | tuple) and len(result) > LIMITS.rendered_body_chars:
            raise _RefusalError(_SEQUENCE)
        return result

    def count_loop(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """Every `{% for %}` of a template iterates through this (see `_compile`)."""
        return _RENDER.get().count(iterable)


def _refuse_before(operator: str, left: Any, right: Any) -> None:
    """What would take too long or too much memory even to compute, such as
    `10 ** (10 ** 7)` (15 s of CPU) or `"x" * 10 ** 10`."""
    if operator == "**" and isinstance(left, int) and isinstance(right, int):
        # |left| >= 2 ** (bits - 1), so the power has at least (bits - 1) * right bits.
        if right > 0 and (abs(left).bit_length() - 1) * right > _LARGEST_NUMBER.bit_length():
            raise _RefusalError(_NUMBER)
    elif operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if (
                isinstance(sequence, str | list | tuple)
                and isinstance(times, int)
                and len(sequence) * times > LIMITS.rendered_body_chars
            ):
                raise _RefusalError(_SEQUENCE)
    elif operator == "%" and isinstance(left, str):
        _refuse_wide_format(left, right)


_FORMAT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _refuse_wide_format(text: str, values: Any) -> None:
    """`"%999999999d" % 1`: a width or precision past what a body may print."""
    limit = LIMITS.rendered_body_chars
    given = values if isinstance(values, tuple) else (values,)
    for spec in _FORMAT_SPEC.finditer(text):
        for size in spec.groups():
            if size == "*":
                wide = any(isinstance(v, int) and abs(v) > limit for v in given)
            else:
                wide = size is not None and (len(size) > len(str(limit)) or int(size) > limit)
            if wide:
                raise _RefusalError(f"formats a value wider than {limit:,} characters")


def _range(*args: int) -> range:
    numbers = range(*args)
    try:
        size = len(numbers)
    except OverflowError:  # longer than a C ssize_t
        size = LIMITS.range_numbers + 1
    if size > LIMITS.range_numbers:
        raise _RefusalError(f"asks range() for more than {LIMITS.range_numbers:,} numbers")
    return numbers


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Every `{{ ... }}` goes through here before it is printed."""
    if callable(value) and not isinstance(value, Undefined):
        raise _RENDER.get().printed(value, context)
    return value


_text = _TemplateEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, finalize=_finalize
)
_text.globals["range"] = _range
_layouts = SandboxedEnvironment(
    loader=FileSystemLoader(TEMPLATES),
    undefined=StrictUndefined,
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
)
_URL = re.compile(r"https?://[^\s<>\"']+")


class _Fields(Mapping[str, Any]):
    """A candidate's custom fields as a template reads them. A value past the limit (one
    written before the API bounded them) fails the render when the template reads it, not
    when another field is."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> Any:
        value = self._values[name]
        size = len(str(value))
        if size > LIMITS.field_value_chars:
            raise _RefusalError(
                f"reads fields.{name}, whose value here is {size:,} characters long; "
                f"the limit is {LIMITS.field_value_chars:,}"
            )
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


@dataclass(frozen=True)
class _Compiled:
    tree: nodes.Template  # as written: what the check reads
    template: Template  # with every loop counted: what renders


def _depth(tree: nodes.Node) -> int:
    """Levels of the syntax tree, counted without recursion (which is what runs out)."""
    deepest, pending = 0, [(tree, 1)]
    while pending:
        node, level = pending.pop()
        deepest = max(deepest, level)
        pending.extend((child, level + 1) for child in node.iter_child_nodes())
    return deepest


@lru_cache(maxsize=128)
def _compile(source: str) -> _Compiled:
    try:
        tree = _text.parse(source)
        if _depth(tree) > LIMITS.nesting_levels:
            raise _RefusalError(_NESTING)
        counted = _text.parse(source)
        for loop in list(counted.find_all(nodes.For)):
            if loop.recursive:
                # Its inner calls, loop(children), would iterate past the counter.
                raise _RefusalError("uses a recursive loop, which touchpoint templates cannot")
            count = nodes.Call(
                nodes.EnvironmentAttribute("count_loop"), [loop.iter], [], None, None
            )
            loop.iter = count.set_lineno(loop.lineno).set_environment(_text)
        return _Compiled(tree=tree, template=_text.from_string(counted))
    except RecursionError:
        raise _RefusalError(_NESTING) from None
    except SyntaxError:
        # Python's own compiler refuses 20 statically nested blocks, below our nesting limit.
        raise _RefusalError(
            "nests more blocks ({% for %}, {% if %}...) inside one another than the 20 "
            "Python can compile"
        ) from None
    except TemplateSyntaxError as error:
        raise _RefusalError(f"is not a valid template: {clause(error.message or '')}") from None
    except (ValueError, OverflowError, MemoryError) as error:
        # A literal Python cannot hold (an integer of more than 4,300 digits, say).
        raise _RefusalError(f"is not a valid template: {clause(str(error))}") from None


def _compiled(source: str, part: Part) -> _Compiled:
    limit = _SOURCE_CHARS[part]
    if len(source) > limit:
        raise _RefusalError(f"is {len(source):,} characters long; the limit is {limit:,}")
    return _compile(source)


def _output(compiled: _Compiled, part: Part, variables: dict[str, Any]) -> str:
    """The template's text, stopped as soon as it passes a limit."""
    limit = _OUTPUT_CHARS[part]
    token = _RENDER.set(_Render(compiled.tree))
    chunks: list[str] = []
    size = 0
    try:
        for chunk in compiled.template.generate(variables):
            size += len(chunk)
            if size > limit:
                raise _RefusalError(f"renders to more than {limit:,} characters")
            chunks.append(chunk)
    except _RefusalError:
        raise
    except RecursionError:
        raise _RefusalError(f"{_NESTING} as it renders (a macro that calls itself?)") from None
    except MemoryError:
        raise _RefusalError(f"uses more than {LIMITS.memory_mib} MiB of memory") from None
    except Exception as error:
        raise _RefusalError(f"cannot be rendered: {clause(str(error))}") from None
    finally:
        _RENDER.reset(token)
    text = "".join(chunks)
    if _ADDRESS.search(text):
        raise _RefusalError("prints a Python object instead of a value (a method without its ()?)")
    return text


def check_template(
    source: str, part: Part, where: str, custom_fields: list[str], *, unsubscribe: bool = True
) -> None:
    """Refuse ("The body of touchpoint 2 ...") a template that breaks a limit, does not
    parse, names a variable we do not have, or fails to render with sample values. An
    e-mail without an unsubscribe link (a stage action's) has no `unsubscribe_url`."""
    try:
        compiled = _compiled(source, part)
        _check_names(compiled.tree, custom_fields, unsubscribe)
        # Names are not all: `first_name.nope` or `1/0` only fail when rendered, so render
        # once with sample values now rather than fail at every send.
        _output(compiled, part, sample_context(custom_fields).variables())
    except _RefusalError as refusal:
        raise ValidationError(f"The {part} of {where} {refusal}.") from None


def _check_names(tree: nodes.Template, custom_fields: list[str], unsubscribe: bool) -> None:
    variables = (
        VARIABLES if unsubscribe else {k: v for k, v in VARIABLES.items() if k != UNSUBSCRIBE}
    )
    for name in sorted(meta.find_undeclared_variables(tree)):
        if name == UNSUBSCRIBE and not unsubscribe:
            raise _RefusalError(
                f"uses '{UNSUBSCRIBE}', which this e-mail does not have: it is about the "
                "candidate's own application and carries no unsubscribe link"
            )
        if name not in variables:
            known = ", ".join(sorted(variables))
            raise _RefusalError(f"uses the unknown variable '{name}'; known variables are {known}")
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name == "fields"):
            continue
        key = node.attr if isinstance(node, nodes.Getattr) else _constant(node.arg)
        if key not in custom_fields:
            declared = ", ".join(custom_fields) or "none"
            raise _RefusalError(
                f"uses the unknown custom field 'fields.{key}'; this company declares {declared}"
            )


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
    # Not a template variable: the branded layout's open pixel, for a campaign e-mail of a
    # company that tracks opens (empty: none). The plain-text part never has one.
    open_pixel_url: str = ""

    def variables(self) -> dict[str, Any]:
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "company_name": self.company_name,
            "sender_name": self.sender_name,
            "sender_title": self.sender_title,
            "unsubscribe_url": self.unsubscribe_url,
            "fields": _Fields(self.fields),
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
    """The e-mail of one touchpoint for one recipient; raises RenderError ("The body ...")
    when a template breaks a limit or fails on these values."""
    variables = context.variables()
    rendered_subject = header_text(_rendered(subject, "subject", variables))
    text = _rendered(body, "body", variables).strip()
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
        open_pixel_url=context.open_pixel_url,
    )
    return RenderedEmail(subject=rendered_subject, text=text_part, html=html)


def _rendered(source: str, part: Part, variables: dict[str, Any]) -> str:
    try:
        return _output(_compiled(source, part), part, variables)
    except _RefusalError as refusal:
        raise RenderError(f"The {part} {refusal}.") from None


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
