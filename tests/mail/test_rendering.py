"""The template language's limits, in this process: each refusal names the limit it hit."""

from __future__ import annotations

import dataclasses

import pytest

from errors import ValidationError
from mail.rendering import (
    LIMITS,
    Brand,
    RenderError,
    check_template,
    render_email,
    sample_context,
)

BRAND = Brand("Acme", None, "#1f2937", "#2563eb")
NESTED_FIELD_LOOPS = "{% for a in fields.role %}{% for b in fields.role %}{% endfor %}{% endfor %}"


def refusal(source: str, part: str = "body") -> str:
    with pytest.raises(ValidationError) as refused:
        check_template(source, part, "touchpoint 2", ["role"])  # type: ignore[arg-type]
    return str(refused.value)


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("x" * 20_001, "is 20,001 characters long; the limit is 20,000"),
        ("{% for i in range(1001) %}{% endfor %}", "asks range() for more than 1,000 numbers"),
        ("{% for i in range(99999999999999999999) %}{% endfor %}", "asks range() for more"),
        (
            "{% for i in range(600) %}{% endfor %}{% for i in range(600) %}{% endfor %}",
            "loops more than 1,000 times (all its loops together)",
        ),
        (
            "{% macro m() %}{% for i in range(600) %}{% endfor %}{% endmacro %}{{ m() }}{{ m() }}",
            "loops more than 1,000 times",
        ),
        ("{% for a in fields recursive %}{{ loop(a) }}{% endfor %}", "uses a recursive loop"),
        ("{{ 10 ** (10 ** 7) }}", "computes a number beyond ±10^15"),
        ("{{ 10 ** 16 }}", "computes a number beyond ±10^15"),
        ("{{ 99999999 * 99999999 }}", "computes a number beyond ±10^15"),
        ("{{ 1e300 * 1e300 }}", "computes a number beyond ±10^15"),
        ('{{ "x" * 10 ** 10 }}', "builds a text or list longer than 100,000 items"),
        ("{{ [0] * 100001 }}", "builds a text or list longer than 100,000 items"),
        ('{{ "%999999999d" % 1 }}', "formats a value wider than 100,000 characters"),
        ('{{ "%*d" % (999999999, 1) }}', "formats a value wider than 100,000 characters"),
        ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "nests deeper than 50 levels"),
        ("{% if 1 %}" * 60 + "x" + "{% endif %}" * 60, "nests deeper than 50 levels"),
        (
            "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
            "nests deeper than 50 levels as it renders",
        ),
        (
            "{{ first_name.upper }}",
            "prints the method 'upper' instead of calling it: write first_name.upper()",
        ),
        ("{{ range }}", "prints the function 'range' instead of calling it: write range()"),
        ('{{ first_name.upper ~ "!" }}', "prints a Python object instead of a value"),
        ('{% for i in range(1000) %}{{ "x" * 101 }}{% endfor %}', "renders to more than 100,000"),
        ("{{ first_name|nofilter }}", "is not a valid template: no filter named 'nofilter'."),
        ("{% foo %}", "is not a valid template: encountered unknown tag 'foo'."),
        (
            "{{ cycler }}",
            "prints the function 'cycler' instead of calling it: write cycler().",
        ),
        ("{% set c = joiner %}{{ c }}", "prints the function 'c' instead of calling it: write c()"),
        ("{% for c in [first_name] %}{{ c.title }}{% endfor %}", "write c.title()."),
        ('{{ cycler("a", "b") }}', "prints a Python object instead of a value"),
        ("{{ fields|select }}", "prints a Python object instead of a value"),
        ('{{ lipsum ~ "" }}', "prints a Python object instead of a value"),
    ],
)
def test_a_body_past_a_limit_is_refused_naming_it(source: str, says: str) -> None:
    sentence = refusal(source)
    assert sentence.startswith("The body of touchpoint 2 "), sentence
    assert says in sentence
    assert " at 0x" not in sentence


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("x" * 501, "is 501 characters long; the limit is 500"),
        ("{% for i in range(100) %}0123456789{% endfor %}", "renders to more than 900 characters"),
    ],
)
def test_a_subject_past_a_limit_is_refused_naming_it(source: str, says: str) -> None:
    assert f"The subject of touchpoint 2 {says}" in refusal(source, "subject")


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(500) %}{% endfor %}{% for i in range(500) %}{{ loop.last }}{% endfor %}",
        "{{ 2 ** 49 }} {{ -(10 ** 15) }} {{ 10 ** 15 }} {{ 7 // 2 }} {{ 7 % 2 }}",
        '{{ "%5d|%-5s|%.2f" % (3, "a", 1.5) }} {{ "ab" * 40000 }}',
        "{{ fields }} {{ fields.role }} {{ fields['role'] }} {{ fields|dictsort }}",
        "{% if 1 %}" * 40 + "{{ first_name.upper() }}" + "{% endif %}" * 40,
        "{% for c in fields.role %}{{ loop.index }}{% else %}none{% endfor %}",
        # Text that only looks like the end of a repr is text.
        "Meet at 0x10> or <b>at 0xFF</b>, {{ first_name }} at 0x1F>",
    ],
)
def test_a_template_within_the_limits_passes(source: str) -> None:
    check_template(source, "body", "touchpoint 1", ["role"])


def render_body(body: str, role: str) -> str:
    context = dataclasses.replace(sample_context(["role"]), fields={"role": role})
    return render_email("Hi", body, False, context, BRAND).text


def test_a_field_value_past_the_limit_fails_the_render_that_reads_it() -> None:
    long = "x" * 30_000
    with pytest.raises(RenderError) as refused:
        render_body(NESTED_FIELD_LOOPS, long)
    assert str(refused.value) == (
        "The body reads fields.role, whose value here is 30,000 characters long; "
        "the limit is 1,000."
    )
    assert render_body("Hello {{ first_name }}", long).startswith("Hello Alex")


def test_loops_over_a_field_at_its_limit_stop_at_the_loop_limit() -> None:
    with pytest.raises(RenderError, match=r"^The body loops more than 1,000 times"):
        render_body(NESTED_FIELD_LOOPS, "x" * LIMITS.field_value_chars)
    assert render_body(NESTED_FIELD_LOOPS + "done", "x" * 31).startswith("done")


def test_a_subject_that_renders_past_its_limit_fails_at_send() -> None:
    context = dataclasses.replace(sample_context(["role"]), fields={"role": "r" * 1_000})
    with pytest.raises(RenderError, match=r"^The subject renders to more than 900 characters"):
        render_email("{{ fields.role }}", "Hi", False, context, BRAND)


def test_a_template_saved_before_the_limits_fails_at_send_naming_the_limit() -> None:
    with pytest.raises(RenderError, match=r"^The body is 20,001 characters long"):
        render_email("Hi", "x" * 20_001, False, sample_context([]), BRAND)
