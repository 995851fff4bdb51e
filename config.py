"""The one settings object: every knob of the service, read from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The embedded stack keeps its files here, below the directory it is started from.
VAR_DIR = Path("var").resolve()


DEV_SIGNING_SECRET = "dev-only-signing-secret-change-me"
MIN_SECRET_LENGTH = 32


class ConfigurationError(Exception):
    """A setting that the service must not run with; the message says what to set."""


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
    signing_secret: SecretStr = SecretStr(DEV_SIGNING_SECRET)
    # Development is said, never guessed: `make run`, the bench and the tests set it.
    # Anything else is production, where the development secret is refused at start.
    environment: Literal["development", "production"] = "production"

    # A campaign test waits this long for its sends, then answers 503 (no worker?).
    test_send_timeout_seconds: float = Field(default=90.0, gt=0)

    # An unsubscribe or a removal answers once no e-mail to that candidate is still in
    # flight, waiting at most this long (a worker frozen mid-send) before it answers.
    exit_wait_seconds: float = Field(default=10.0, ge=0)

    # `make run` (devstack.py) serves the API and the Web UI on these ports.
    api_port: int = Field(default=8000, ge=1, le=65535)
    ui_port: int = Field(default=8233, ge=1, le=65535)

    # Where the local mail sink writes one .eml per message; the API lists it when set.
    mail_sink_dir: Path | None = None

    # Worker tuning: a cached workflow costs about 64 KB, a sleeping one nothing.
    max_cached_workflows: int = 1000
    max_concurrent_activities: int = 100
    max_concurrent_workflow_tasks: int = 100
    # Bulk enrolment starts at most this many workflows at once (the dev server starves
    # its workflow tasks when flooded with starts).
    enrol_concurrency: int = 25
    # Signals in flight when a campaign's archive or resume tells its workflows.
    signal_concurrency: int = 50
    # Child processes that check and render templates, in the API and in each worker
    # (their limits are mail.rendering.LIMITS).
    render_processes: int = Field(default=2, ge=1)

    @property
    def workflow_task_slots(self) -> int:
        """Workflow tasks the worker takes at once. A send runs inside the workflow task its
        timer woke (a local activity, workflows/nurture.py): a task taken with no send slot
        free would wait inside its 10 s timeout, and on a busy machine expire and run
        again. So there are never more than there are send slots."""
        return min(self.max_concurrent_workflow_tasks, self.max_concurrent_activities)

    def check_for_service(self) -> None:
        """Refuse to serve links signed with a secret anybody can read in our source: the
        API and the worker call this before they start."""
        if self.environment == "development":
            return
        secret = self.signing_secret.get_secret_value()
        if secret == DEV_SIGNING_SECRET or len(secret) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                "NURTURE_SIGNING_SECRET is the development default or shorter than "
                f"{MIN_SECRET_LENGTH} characters, and NURTURE_ENVIRONMENT is not "
                "'development': set a long random secret (e.g. `openssl rand -hex 32`), "
                "or NURTURE_ENVIRONMENT=development on a developer's machine."
            )
