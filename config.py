"""The one settings object: every knob of the service, read from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The embedded stack keeps its files here, below the directory it is started from.
VAR_DIR = Path("var").resolve()


class Settings(BaseSettings):
    """Defaults run the embedded stack on one machine; production overrides by environment."""

    model_config = SettingsConfigDict(env_prefix="NURTURE_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{VAR_DIR / 'nurture.db'}",
        validation_alias=AliasChoices("DATABASE_URL", "NURTURE_DATABASE_URL"),
    )
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "nurture"

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = 30.0

    # Links in e-mails point here (https in production) and the Message-ID domain.
    public_base_url: str = "http://localhost:8000"
    mail_domain: str = "nurture.localhost"
    signing_secret: SecretStr = SecretStr("dev-only-signing-secret-change-me")

    # Where the local mail sink writes one .eml per message; the API lists it when set.
    mail_sink_dir: Path | None = None

    # Worker tuning: a cached workflow costs about 64 KB, a sleeping one nothing.
    max_cached_workflows: int = 1000
    max_concurrent_activities: int = 100
    max_concurrent_workflow_tasks: int = 100
    # Bulk enrolment starts at most this many workflows at once (the dev server starves
    # its workflow tasks when flooded with starts).
    enrol_concurrency: int = 25
