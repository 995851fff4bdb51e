"""Every domain error has its HTTP status: an unmapped one would answer a 500."""

from __future__ import annotations

import errors
from api.errors import status_of


def _all_errors() -> list[type[errors.NurtureError]]:
    found = [errors.NurtureError]
    for cls in found:
        found.extend(cls.__subclasses__())
    return [cls for cls in found if cls is not errors.NurtureError]


def test_every_domain_error_maps_to_a_4xx_or_503() -> None:
    classes = _all_errors()
    assert errors.AddOnDisabledError in classes
    for cls in classes:
        status = status_of(cls("a sentence"))
        assert 400 <= status < 500 or status == 503, cls
