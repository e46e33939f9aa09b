"""Pure: a delivery's bytes -> the items it carries, with their de-duplication keys.

Imports nothing but ``archiver.errors`` and the standard library. Never raises for a
body it cannot understand: an unparseable body becomes one ``quarantine`` item, an
unrecognised part becomes an ``unknown`` item kept whole.
(TO BE IMPLEMENTED: see the spec in the dataclasses below.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Item kinds the sealer writes for a delivery's content (architecture.md decision 2).
CONVERSATIONAL = ("message", "echo", "outbound", "history_message")
KINDS = CONVERSATIONAL + (
    "status", "contact_sync", "consent", "template_event", "edit", "revoke",
    "account_event", "unknown", "quarantine",
)


@dataclass(frozen=True)
class MediaRef:
    """An attachment named by an item: fetched later through the Graph API."""

    media_id: str
    sha256: str | None  # as given: base64 (live webhooks) or hex (media endpoint, history)
    mime_type: str | None
    filename: str | None = None


@dataclass(frozen=True)
class Item:
    """One archivable thing carried by a delivery.

    ``key`` is the natural de-duplication key (section 10 of whatsapp-webhooks.md); the
    sealer hashes it before it goes into the clear part of a record. Conversational kinds
    share the key ``msg:<wamid>`` so the first of message/echo/outbound/history wins.
    ``payload`` is what gets encrypted: the item's own JSON object plus the envelope
    context it needs to be read alone (metadata, the contact profile, field name).
    """

    kind: str
    key: str
    payload: dict[str, Any] = field(repr=False)
    wamid: str | None = None
    contact: str | None = field(default=None, repr=False)  # customer: BSUID if given, else wa_id/phone
    business: str | None = None  # phone_number_id (or display number) of the business
    occurred_at: int | None = None  # epoch seconds as the payload states it
    type: str | None = None  # message type, status state, template event name, ...
    refs: dict[str, str] = field(default_factory=dict)  # original / context / completes / reaction_to -> wamid
    media: tuple[MediaRef, ...] = ()
    state: str | None = None  # statuses: sent, delivered, read, played, failed
