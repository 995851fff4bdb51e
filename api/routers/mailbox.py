"""The local mail sink's messages, for a person trying the embedded stack (dev only)."""

from __future__ import annotations

from email import message_from_binary_file, policy
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import SettingsDep
from api.errors import answers
from errors import NotFoundError

# 404 when no sink is configured: production has none.
router = APIRouter(prefix="/mailbox", tags=["mailbox (local sink)"], responses=answers(404))


class MailboxEntry(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    file: str
    from_: str = Field(alias="from")
    to: str
    subject: str
    date: str
    test: bool


def _folder(folder: Path | None) -> Path:
    if folder is None or not folder.is_dir():
        raise NotFoundError("No local mail sink is configured (NURTURE_MAIL_SINK_DIR).")
    return folder


@router.get("", response_model=list[MailboxEntry])
async def list_mailbox(settings: SettingsDep) -> list[MailboxEntry]:
    """Every message the local sink received, newest first."""
    entries = []
    for path in sorted(_folder(settings.mail_sink_dir).glob("*.eml"), reverse=True):
        with path.open("rb") as file:
            message = message_from_binary_file(file, policy=policy.default)
        entries.append(
            MailboxEntry(
                file=path.name,
                from_=str(message.get("From", "")),
                to=str(message.get("To", "")),
                subject=str(message.get("Subject", "")),
                date=str(message.get("Date", "")),
                test=message.get("X-Nurture-Test") == "yes",
            )
        )
    return entries


# The sink names its files by arrival (about 30 characters); a file system refuses past 255.
FileName = Annotated[str, PathParam(max_length=255, description="A file name from GET /mailbox")]


@router.get("/{file}", response_class=PlainTextResponse, responses=answers(422))
async def read_message(file: FileName, settings: SettingsDep) -> PlainTextResponse:
    folder = _folder(settings.mail_sink_dir)
    path = folder / Path(file).name
    try:
        if path.suffix == ".eml" and path.is_file():
            return PlainTextResponse(path.read_text(errors="replace"))
    except (OSError, ValueError):  # too long for the file system, or a NUL in it
        pass
    raise NotFoundError(f"No message '{file}' in the mail sink.")
