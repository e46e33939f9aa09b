"""``archiver sample-webhook``: one signed WhatsApp webhook to the running service.

It is the first message a newcomer archives (README, "First message"): a Cloud API
``messages`` delivery with one inbound text, signed with the configured app secret
(``ARCHIVER_APP_SECRET[_FILE]``, else the ``secrets/app-secret`` file that ``scripts/serve``
generates in ``ARCHIVER_HOME``), posted to ``127.0.0.1:$ARCHIVER_PORT``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import requests

from archiver.config import Settings
from archiver.errors import ConfigError, SampleFailed

TEXT = "Hello, I would like a refund for order 1234 please"
BUSINESS_NUMBER = "15550100001"
CUSTOMER = "15550100002"


def app_secret(settings: Settings) -> str:
    """The first configured app secret, else the one ``scripts/serve`` generated. Raises ConfigError."""
    if settings.app_secrets:
        return settings.app_secrets[0]
    generated = settings.home / "secrets" / "app-secret"
    try:
        return generated.read_text(encoding="utf-8").split(",")[0].strip()
    except OSError as exc:
        raise ConfigError(f"no app secret: ARCHIVER_APP_SECRET is not set and {generated} cannot be read",
                          hint="set ARCHIVER_APP_SECRET (or _FILE) to the service's secret") from exc


def body(wamid: str, text: str, now: int | None = None) -> bytes:
    """A Cloud API webhook delivering one inbound text message."""
    delivery: dict[str, Any] = {"object": "whatsapp_business_account", "entry": [{
        "id": "100000000000001",
        "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": BUSINESS_NUMBER, "phone_number_id": "100000000000002"},
            "contacts": [{"profile": {"name": "Sample Customer"}, "wa_id": CUSTOMER}],
            "messages": [{"from": CUSTOMER, "id": wamid, "timestamp": str(now or int(time.time())),
                          "type": "text", "text": {"body": text}}],
        }}],
    }]}
    return json.dumps(delivery).encode()


def sign(data: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends."""
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def send(settings: Settings, *, url: str | None = None, text: str | None = None, retry_for: float = 0.0) -> str:
    """Post the sample; return its wamid. ``retry_for``: seconds to keep trying while the
    service does not answer yet (it is starting). Raises SampleFailed, ConfigError."""
    url = url or f"http://127.0.0.1:{settings.port}/webhooks/whatsapp"
    wamid = f"wamid.SAMPLE{secrets.token_hex(8).upper()}"
    data = body(wamid, text or TEXT)
    headers = {"X-Hub-Signature-256": sign(data, app_secret(settings)), "Content-Type": "application/json"}
    deadline = time.monotonic() + retry_for
    while True:
        try:
            answer = requests.post(url, data=data, headers=headers, timeout=30)
            break
        except requests.ConnectionError as exc:
            if time.monotonic() >= deadline:
                raise SampleFailed(f"nothing answers at {url}",
                                   hint="start `archiver serve` (or scripts/serve) and set ARCHIVER_PORT "
                                        "to its port") from exc
            time.sleep(0.5)  # polling a service that is still starting, not synchronising a test
    if answer.status_code != 200:
        raise SampleFailed(f"{url} answered {answer.status_code}",
                           hint="401: the service has another app secret than this shell" if answer.status_code == 401
                           else None)
    return wamid


def wait_searchable(settings: Settings, wamid: str, timeout: float) -> int:
    """Wait until the message ``wamid`` is sealed and indexed; return its seq. Raises SampleFailed."""
    from sqlalchemy import select

    from archiver.catalog import Record
    from archiver.services import Services

    services = Services.open(settings, create=False)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with services.sessions() as session:
                seq = session.scalar(select(Record.seq).where(Record.wamid == wamid, Record.kind == "message"))
            if seq is not None:
                indexed = services.search.state()  # the index's own cursor
                if indexed is not None and indexed.seq >= seq:
                    return int(seq)
            if time.monotonic() >= deadline:
                raise SampleFailed(f"{wamid} was not {'indexed' if seq else 'sealed'} within {timeout:g}s",
                                   hint="is the service's jobs process running? see its log")
            time.sleep(0.2)
    finally:
        services.close()
