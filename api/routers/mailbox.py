"""The local mail sink's messages, for a person trying the embedded stack (dev only)."""

from __future__ import annotations

from email import message_from_binary_file, policy
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import SettingsDep
from errors import NotFoundError

router = APIRouter(prefix="/mailbox", tags=["mailbox (local sink)"])


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


@router.get("/{file}", response_class=PlainTextResponse)
async def read_message(file: str, settings: SettingsDep) -> PlainTextResponse:
    folder = _folder(settings.mail_sink_dir)
    path = folder / Path(file).name
    if path.suffix != ".eml" or not path.is_file():
        raise NotFoundError(f"No message '{file}' in the mail sink.")
    return PlainTextResponse(path.read_text(errors="replace"))
