"""The open-tracking pixel of campaign e-mails: public, as images in e-mails are. Any
token gets the same 1x1 GIF; only one we signed for a message records an open, as a
person's or a machine's (store/opens.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import Response

from api.deps import NowDep, SessionDep, SettingsDep
from api.errors import answers
from mail import links
from store.opens import record_open

router = APIRouter(prefix="/opens", tags=["tracking"])

# A transparent 1x1 GIF.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
# Every fetch comes here, so that each open is seen (a cached pixel would hide reopens).
_NO_CACHE = {"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache"}

_GIF: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The pixel, whatever the token",
        "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get(
    "/{token}",
    response_class=Response,
    responses={**_GIF, **answers(404)},
)
async def open_pixel(
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    user_agent: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """A fetch of a campaign e-mail's pixel. A token we did not sign (altered, or made
    up) gets the pixel and counts nothing; one signed for a message that is no longer
    there (erased) is 404."""
    signed = links.verify_open(settings.signing_secret.get_secret_value(), token)
    if signed is not None:
        async with session.begin():
            await record_open(
                session, signed.company_id, signed.message_id, user_agent=user_agent, now=now
            )
    return Response(PIXEL, media_type="image/gif", headers=_NO_CACHE)
