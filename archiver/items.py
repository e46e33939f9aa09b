"""Pure: a delivery's bytes -> the items it carries, with their de-duplication keys.

Imports nothing but ``archiver.errors`` and the standard library. Never raises for a
body it cannot understand: an unparseable body becomes one ``quarantine`` item, an
unrecognised part becomes an ``unknown`` item kept whole.

Three producers feed the archive (architecture.md decision 2):

* ``extract_webhook``: a Meta webhook body, mapped per ``field`` as in section 10 of
  ``whatsapp-webhooks.md``;
* ``extract_capture_message``: the CRM/BSP capture of one Cloud API send (section 9);
* ``extract_consent``: a consent event posted by a CRM or web form.

Every item's ``payload`` is a dict that can be read alone: ``field``, the item's own
object kept exactly as parsed, and the envelope context (``metadata``, the matching
``contacts[]`` entry as ``contact``, ``entry_id``, ``entry_time``).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from archiver.canonical import canonical, sha256_hex
from archiver.errors import ValidationError

# Item kinds the sealer writes for a delivery's content (architecture.md decision 2).
CONVERSATIONAL = ("message", "echo", "outbound", "history_message")
KINDS = CONVERSATIONAL + (
    "status", "contact_sync", "consent", "template_event", "edit", "revoke",
    "account_event", "unknown", "quarantine",
)

# Delivery states of a sent message, in the order they can only move forward.
STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3, "played": 4}
FAILED = "failed"

MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")  # the one list: intake, sealer, indexer
CONSENT_ACTIONS = frozenset({"opt_in", "opt_out"})


@dataclass(frozen=True)
class MediaRef:
    """An attachment named by an item: fetched later through the Graph API."""

    media_id: str
    sha256: str | None  # as given: base64 (live webhooks) or hex (media endpoint, history)
    mime_type: str | None
    filename: str | None = field(default=None, repr=False)  # file names can be personal


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
    # Every identifier of the customer the item names (wa_id/phone, BSUID): two or more pair
    # them as one person (``archiver.identity``). Never a business number.
    ids: tuple[str, ...] = field(default=(), repr=False)


# --------------------------------------------------------------------------- helpers


class JsonFloat(float):
    """A number with a fraction or exponent, as parsed from a body.

    It is a float in every respect, and ``json`` writes it as one. orjson refuses it (it
    accepts only exact floats), so ``canonical.canonical`` hands any payload holding one to
    ``json``: orjson would write ``1e16`` where ``json`` writes ``1e+16``, and canonical
    bytes are defined as ``json``'s.
    """

    __slots__ = ()


# Epochs outside [1970, 10000) are garbage, and would overflow datetime elsewhere.
_MAX_EPOCH = 253402300800
_EPOCH_TEXT = re.compile(r"\d+(\.\d+)?")


def parse_time(value: Any) -> int | None:
    """Epoch seconds (UTC) from an epoch number, a digit string or ISO 8601 text.

    ISO 8601 must carry ``Z`` or an offset: a naive time is ambiguous, and an archive
    must not guess the zone. Anything else (bool, garbage, out of range) gives None.
    Never raises.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return _epoch_in_range(value)
    if isinstance(value, str):
        return _parse_time_text(value.strip())
    return None


def _epoch_in_range(value: float) -> int | None:
    if not math.isfinite(value) or not 0 <= value < _MAX_EPOCH:
        return None
    return int(value)


def _parse_time_text(text: str) -> int | None:
    if _EPOCH_TEXT.fullmatch(text):
        return _epoch_in_range(int(text.split(".")[0]))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None
    try:
        return _epoch_in_range(moment.timestamp())
    except (OverflowError, ValueError, OSError):
        return None


def status_supersedes(new: str | None, old: str | None) -> bool:
    """Whether status ``new`` becomes the current state of a message now at ``old``.

    Statuses arrive out of order and ``delivered`` may never come, so the current state
    is the highest of sent < delivered < read < played and never moves down. ``failed``
    is terminal: once failed, nothing supersedes it; and it supersedes only "no state
    yet" or ``sent`` (a message Meta has delivered or read did not fail to send).
    A state this table does not know never supersedes anything. Never raises.

    ======== ==== ==== ========= ==== ====== ======
    new\\old  None sent delivered read played failed
    ======== ==== ==== ========= ==== ====== ======
    sent     yes  no   no        no   no     no
    read     yes  yes  yes       no   no     no
    failed   yes  yes  no        no   no     no
    ======== ==== ==== ========= ==== ====== ======
    """
    if old == FAILED:
        return False
    if new == FAILED:
        return old is None or old == "sent" or old not in STATUS_RANK
    if new not in STATUS_RANK:
        return False
    return STATUS_RANK[new] > STATUS_RANK.get(old or "", 0)


def _text(value: Any) -> str | None:
    """A non-empty string, or an integer as text (ids are numbers in some samples).

    These strings leave the encrypted payload (keys, wamids, contacts, types go into the
    clear part and the catalog), so a lone surrogate becomes its ``\\udXXX`` escape.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return clean_text(value) if isinstance(value, str) and value else None


def clean_text(value: str) -> str:
    """``value`` as valid Unicode text: a lone surrogate (legal as ``\\udXXX`` in JSON, not
    encodable as UTF-8) is written as that escape. Other text is returned unchanged."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class _Broken(Exception):
    """An element of a known field that does not have the shape its mapping needs."""


def _need(obj: Any, key: str) -> str:
    """``obj[key]`` as text, or _Broken: the element is then kept whole as unknown."""
    value = _text(obj.get(key)) if isinstance(obj, dict) else None
    if value is None:
        raise _Broken(key)
    return value


def _need_dict(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _Broken("object")
    return obj


# --------------------------------------------------------------------------- parsing


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN/Infinity: Python accepts them, JSON does not


class _OutOfRange(ValueError):
    """A number (``1e400``) beyond what a float holds: a payload could not be written as JSON."""


def _finite_float(text: str) -> JsonFloat:
    value = JsonFloat(text)
    if not math.isfinite(value):
        raise _OutOfRange(text)
    return value


# json.loads(text, parse_constant=..., parse_float=...) builds this decoder anew for every body.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _parse(raw: bytes) -> tuple[Any, str | None]:
    """(parsed JSON, None) or (None, reason to quarantine). Never raises."""
    data = _as_bytes(raw)
    if not data.strip():
        return None, "empty body"
    try:
        # Decode ourselves: json.loads(bytes) would silently accept UTF-16/32.
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "body is not UTF-8"
    try:
        if text.startswith("\ufeff"):  # what json.loads refuses before decoding
            return None, "invalid JSON"
        return _DECODER.decode(text), None
    except _OutOfRange:
        # The items would hold infinity, which canonical JSON cannot: the sealer would stall
        # on this body. Quarantined, its bytes stay sealed in the delivery record.
        return None, "number out of float range"
    except (ValueError, RecursionError):
        return None, "invalid JSON"


def _as_bytes(raw: Any) -> bytes:
    """The body as bytes, even if a caller broke the contract and passed text."""
    return raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)


def _quarantine(raw: bytes, reason: str) -> Item:
    return Item(kind="quarantine", key=f"quarantine:{sha256_hex(_as_bytes(raw))}",
                payload={"reason": reason})


# --------------------------------------------------------------------------- webhooks


@dataclass(frozen=True)
class _Change:
    """One ``entry[].changes[]`` element with the envelope it sits in."""

    field: str | None
    change: Any
    value: dict[str, Any]
    entry_id: Any
    entry_time: Any

    # Read once per change (every item of it asks): the value is never changed while mapped.
    @functools.cached_property
    def metadata(self) -> dict[str, Any]:
        return _dict(self.value.get("metadata"))

    @functools.cached_property
    def phone_number_id(self) -> str | None:
        return _text(self.metadata.get("phone_number_id"))

    @functools.cached_property
    def display_number(self) -> str | None:
        return _text(self.metadata.get("display_phone_number"))

    def contact_entry(self, *ids: str | None) -> dict[str, Any] | None:
        """The ``contacts[]`` entry whose wa_id or user_id is one of ``ids``."""
        wanted = {i for i in ids if i}
        for entry in self.value.get("contacts") or ():
            if isinstance(entry, dict) and wanted & {entry.get("wa_id"), entry.get("user_id")}:
                return entry
        return None

    def base(self, contact: dict[str, Any] | None = None, **own: Any) -> dict[str, Any]:
        """The payload: field, the item's own objects, and the envelope context."""
        payload: dict[str, Any] = {"field": self.field, **own}
        payload.update(metadata=self.value.get("metadata"), contact=contact,
                       entry_id=self.entry_id, entry_time=self.entry_time)
        if "errors" in self.value:  # value-level errors next to messages: keep them visible
            payload["value_errors"] = self.value["errors"]
        return payload


def extract_webhook(raw: bytes) -> list[Item]:
    """Every item a Meta webhook body carries, in document order.

    Never raises: a body that is empty, not UTF-8, not JSON, not an object or without
    an ``entry`` array becomes a single ``quarantine`` item keyed by its SHA-256; any
    part it cannot map becomes an ``unknown`` item holding that part whole. Items that
    share a key are all returned (the sealer de-duplicates across the archive).
    """
    try:
        body, reason = _parse(raw)
        if reason is None:
            reason = _body_problem(body)
        if reason is not None:
            return [_quarantine(raw, reason)]
        return _body_items(body)
    except Exception as exc:  # the last line of defence: a delivery is never lost
        return [_quarantine(raw, f"extractor error: {type(exc).__name__}")]


def _body_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body is not a JSON object"
    if not isinstance(body.get("entry"), list):
        return "body has no entry array"
    return None


_ENVELOPE_KEYS = frozenset({"object", "entry"})


def _body_items(body: dict[str, Any]) -> list[Item]:
    items = [item for entry in body["entry"] for item in _entry_items(entry)]
    extra = {k: v for k, v in body.items() if k not in _ENVELOPE_KEYS}
    if extra:  # Meta sends only object+entry: anything else is kept, not ignored
        items.append(_unknown_item(None, extra, None, None, None))
    return items


def _entry_items(entry: Any) -> list[Item]:
    if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
        return [_unknown_item(None, entry, None, None, None)]
    return [item for change in entry["changes"]
            for item in _change_items(entry, change)]


def _change_items(entry: dict[str, Any], change: Any) -> list[Item]:
    """The items of one change; what could not be mapped is added once as unknown."""
    fld = _text(change.get("field")) if isinstance(change, dict) else None
    value = change.get("value") if isinstance(change, dict) else None
    mapper = _FIELD_MAPPERS.get(fld or "")
    if not isinstance(value, dict) or mapper is None:
        return [_unknown_item(fld, change, entry.get("id"), entry.get("time"), value)]
    ctx = _Change(fld, change, value, entry.get("id"), entry.get("time"))
    mapped = mapper(ctx)
    items = [item for item in mapped if item is not None]
    if not items or len(items) < len(mapped):
        items.append(_unknown_item(fld, change, ctx.entry_id, ctx.entry_time, value))
    return items


def _unknown_item(fld: str | None, whole: Any, entry_id: Any, entry_time: Any,
                  value: Any) -> Item:
    """An unrecognised part, kept whole, keyed by the hash of its canonical JSON."""
    metadata = _dict(_dict(value).get("metadata"))
    payload = {"field": fld, "change": whole, "entry_id": entry_id, "entry_time": entry_time}
    return Item(kind="unknown", key=f"unknown:{sha256_hex(canonical(whole))}",
                payload=payload, type=fld,
                business=_text(metadata.get("phone_number_id")) or _text(entry_id),
                occurred_at=parse_time(entry_time))


def _guard(fn: Callable[..., Any], *args: Any) -> list[Item | None]:
    """Run an element mapper; a _Broken element becomes None (kept whole later)."""
    try:
        result = fn(*args)
    except _Broken:
        return [None]
    return result if isinstance(result, list) else [result]


def _array(obj: dict[str, Any], key: str) -> list[Any]:
    """``obj[key]`` as a list; a non-list is one broken element, not silence."""
    value = obj.get(key)
    if value is None:
        return []
    return value if isinstance(value, list) else [None]


# Value keys that are envelope, not items, for the array-carrying fields.
_PASSIVE_KEYS = frozenset({"messaging_product", "metadata", "contacts", "errors"})


def _array_field(handlers: dict[str, Callable[..., Any]]) -> Callable[[_Change], list[Any]]:
    """A mapper that walks the value's arrays in document order, one handler each."""
    def mapper(ctx: _Change) -> list[Item | None]:
        out: list[Item | None] = []
        for key, value in ctx.value.items():
            if key in handlers:
                out.extend(r for el in _array(ctx.value, key)
                           for r in _guard(handlers[key], ctx, el))
            elif key not in _PASSIVE_KEYS and isinstance(value, list):
                out.append(None)  # a new array Meta added: keep the change whole
        if not any(item is not None for item in out):
            out.extend(_value_errors(ctx))
        return out
    return mapper


# ----- field messages / smb_message_echoes


def _conversation_kind(base_kind: str, mtype: str | None) -> tuple[str, str]:
    """(kind, key prefix): edits and revokes are linked events, not new messages."""
    if mtype in ("edit", "revoke"):
        return mtype, mtype
    return base_kind, "msg"


def _refs(msg: dict[str, Any], mtype: str | None) -> dict[str, str]:
    """Links to other wamids: the quoted message, the edited/revoked or reacted one."""
    refs: dict[str, str] = {}
    context = _text(_dict(msg.get("context")).get("id"))
    if context:
        refs["context"] = context
    if mtype in ("edit", "revoke"):
        original = _text(_dict(msg.get(mtype)).get("original_message_id"))
        if original:
            refs["original"] = original
    if mtype == "reaction":
        target = _text(_dict(msg.get("reaction")).get("message_id"))
        if target:
            refs["reaction_to"] = target
    return refs


def _media(msg: dict[str, Any]) -> tuple[MediaRef, ...]:
    """Media the message names by id; an edit names the media of its new version."""
    mtype = msg.get("type")
    if mtype == "edit":
        inner = _dict(_dict(msg.get("edit")).get("message"))
        return _media(inner) if inner.get("type") != "edit" else ()
    if mtype not in MEDIA_TYPES:
        return ()
    obj = _dict(msg.get(mtype))
    media_id = _text(obj.get("id"))
    if media_id is None:
        return ()
    return (MediaRef(media_id, _text(obj.get("sha256")), _text(obj.get("mime_type")),
                     _text(obj.get("filename"))),)


def _identity(bsuid: str | None, phone: str | None, entry: dict[str, Any] | None) -> str | None:
    """The customer's id: the BSUID when known (it survives username adoption)."""
    entry = entry or {}
    return bsuid or _text(entry.get("user_id")) or phone or _text(entry.get("wa_id"))


def _ids(ctx: _Change, *given: str | None, entry: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The customer identifiers an item names: ``given`` and its ``contacts[]`` entry's
    ``wa_id``/``user_id`` (never ``parent_user_id``, never the business's own numbers)."""
    entry = entry or {}
    business = {ctx.phone_number_id, ctx.display_number}
    out: list[str] = []
    for value in (*given, _text(entry.get("wa_id")), _text(entry.get("user_id"))):
        if value and value not in business and value not in out:
            out.append(value)
    return tuple(out)


def _conversation_item(ctx: _Change, msg: dict[str, Any], kind: str, key: str,
                       side: tuple[str | None, str | None], **extra: Any) -> Item:
    """An item for a message-shaped object (live, echo or history)."""
    mtype = _text(msg.get("type"))
    entry = ctx.contact_entry(*side)
    return Item(kind=kind, key=key, payload=ctx.base(entry, message=msg, **extra),
                wamid=_need(msg, "id"), contact=_identity(side[0], side[1], entry),
                business=ctx.phone_number_id, occurred_at=parse_time(msg.get("timestamp")),
                type=mtype, refs=_refs(msg, mtype), media=_media(msg), ids=_ids(ctx, *side, entry=entry))


def _inbound_message(ctx: _Change, el: Any) -> Item:
    msg = _need_dict(el)
    kind, prefix = _conversation_kind("message", _text(msg.get("type")))
    side = (_text(msg.get("from_user_id")), _text(msg.get("from")))
    return _conversation_item(ctx, msg, kind, f"{prefix}:{_need(msg, 'id')}", side)


def _sent_by_business(msg: dict[str, Any], display: str | None, default: bool) -> bool:
    """Whether the business sent ``msg``, judged by which side is the business number."""
    if display and _text(msg.get("from")) == display:
        return True
    if display and _text(msg.get("to")) == display:
        return False
    return default


def _counterparty(msg: dict[str, Any], outbound: bool) -> tuple[str | None, str | None]:
    """(BSUID, phone) of the customer side of ``msg``."""
    if outbound:
        return _text(msg.get("to_user_id")), _text(msg.get("to"))
    return _text(msg.get("from_user_id")), _text(msg.get("from"))


def _echo(ctx: _Change, el: Any) -> Item:
    msg = _need_dict(el)
    kind, prefix = _conversation_kind("echo", _text(msg.get("type")))
    # Echoes are the business's own sends; but some samples swap from/to, so trust
    # the business number over the field names when it tells us otherwise.
    side = _counterparty(msg, _sent_by_business(msg, ctx.display_number, True))
    return _conversation_item(ctx, msg, kind, f"{prefix}:{_need(msg, 'id')}", side)


def _status(ctx: _Change, el: Any) -> Item:
    st = _need_dict(el)
    wamid, state = _need(st, "id"), _need(st, "status")
    bsuid, phone = _text(st.get("recipient_user_id")), _text(st.get("recipient_id"))
    entry = ctx.contact_entry(bsuid, phone)
    return Item(kind="status", key=f"status:{wamid}:{state}",
                payload=ctx.base(entry, status=st), wamid=wamid,
                contact=_identity(bsuid, phone, entry), business=ctx.phone_number_id,
                occurred_at=parse_time(st.get("timestamp")), type=state, state=state,
                ids=_ids(ctx, bsuid, phone, entry=entry))


def _value_errors(ctx: _Change) -> list[Item | None]:
    """``value.errors[]`` with nothing else: operational events (no wamid to key by)."""
    digest = sha256_hex(canonical(ctx.value))
    return [r for err in _array(ctx.value, "errors")
            for r in _guard(_value_error, ctx, err, digest)]


def _value_error(ctx: _Change, el: Any, digest: str) -> Item:
    err = _need_dict(el)
    code = _text(err.get("code")) or ""
    return Item(kind="account_event", key=f"error:{ctx.phone_number_id or ''}:{code}:{digest}",
                payload=ctx.base(None, error=err), business=ctx.phone_number_id,
                occurred_at=parse_time(ctx.entry_time), type="error")


# ----- field history


def _history_chunk(ctx: _Change, el: Any) -> list[Item | None]:
    chunk = _need_dict(el)
    if "threads" not in chunk and "errors" not in chunk:
        raise _Broken("threads")
    meta = chunk.get("metadata")
    out: list[Item | None] = []
    for err in _array(chunk, "errors"):
        out.extend(_guard(_history_error, ctx, meta, err))
    for thread in _array(chunk, "threads"):
        out.extend(_guard(_thread, ctx, meta, thread))
    return out


def _history_error(ctx: _Change, meta: Any, el: Any) -> Item:
    err = _need_dict(el)
    code = _text(err.get("code")) or ""
    return Item(kind="account_event", key=f"history-error:{ctx.phone_number_id or ''}:{code}",
                payload=ctx.base(None, error=err, history_metadata=meta),
                business=ctx.phone_number_id, type="history_declined",
                occurred_at=parse_time(ctx.entry_time))


def _thread(ctx: _Change, meta: Any, el: Any) -> list[Item | None]:
    thread = _need_dict(el)
    thread_id = _need(thread, "id")
    return [r for msg in _array(thread, "messages")
            for r in _guard(_history_message, ctx, meta, thread_id, msg)]


def _history_message(ctx: _Change, meta: Any, thread_id: str, el: Any) -> Item:
    msg = _need_dict(el)
    # Only outbound history messages carry "to" (whatsapp-webhooks.md 6.2).
    outbound = _sent_by_business(msg, ctx.display_number, "to" in msg)
    item = _conversation_item(ctx, msg, "history_message", f"msg:{_need(msg, 'id')}",
                              (None, thread_id), thread_id=thread_id, history_metadata=meta,
                              direction="out" if outbound else "in")
    return replace(item, contact=thread_id)  # the thread id names the customer


def _history_media(ctx: _Change, el: Any) -> Item:
    """Top-level ``messages[]`` under history: media for an earlier placeholder."""
    msg = _need_dict(el)
    wamid = _need(msg, "id")
    outbound = _sent_by_business(msg, ctx.display_number, "to" in msg)
    item = _conversation_item(ctx, msg, "history_message", f"histmedia:{wamid}",
                              _counterparty(msg, outbound),
                              direction="out" if outbound else "in")
    return replace(item, refs={**item.refs, "completes": wamid})


# ----- fields smb_app_state_sync and user_preferences


def _state_sync(ctx: _Change, el: Any) -> Item:
    sync = _need_dict(el)
    phone = _need(_dict(sync.get("contact")), "phone_number")
    action = _need(sync, "action")
    stamp = _need(_dict(sync.get("metadata")), "timestamp")
    return Item(kind="contact_sync", key=f"contact:{phone}:{action}:{stamp}",
                payload=ctx.base(entry := ctx.contact_entry(phone), state_sync=sync), contact=phone,
                business=ctx.phone_number_id, occurred_at=parse_time(stamp), type=action,
                ids=_ids(ctx, phone, _text(_dict(sync.get("contact")).get("user_id")), entry=entry))


def _preference(ctx: _Change, el: Any) -> Item:
    pref = _need_dict(el)
    wa_id, user_id = _text(pref.get("wa_id")), _text(pref.get("user_id"))
    who = wa_id or _need(pref, "user_id")
    category, choice = _need(pref, "category"), _need(pref, "value")
    stamp = _need(pref, "timestamp")
    entry = ctx.contact_entry(user_id, wa_id)
    return Item(kind="consent", key=f"consent:{who}:{category}:{choice}:{stamp}",
                payload=ctx.base(entry, preference=pref), contact=_identity(user_id, wa_id, entry),
                business=ctx.phone_number_id, occurred_at=parse_time(stamp), type=choice,
                ids=_ids(ctx, user_id, wa_id, entry=entry))


# ----- template and account fields (one object per value, entry.time present)


def _time_part(ctx: _Change) -> str:
    """entry.time for a key; if absent, the change's hash, so distinct events never merge."""
    return _text(ctx.entry_time) or f"h{sha256_hex(canonical(ctx.change))}"


def _ledger_item(ctx: _Change, kind: str, key: str, type_: str) -> Item:
    return Item(kind=kind, key=key, payload=ctx.base(None, value=ctx.value),
                business=_text(ctx.entry_id), occurred_at=parse_time(ctx.entry_time),
                type=type_)


# field -> (key prefix, the value key whose content names the event; None = hash)
_TEMPLATE_FIELDS: dict[str, tuple[str, str | None]] = {
    "message_template_status_update": ("template-status", "event"),
    "message_template_quality_update": ("template-quality", "new_quality_score"),
    "template_category_update": ("template-category", "new_category"),
    "message_template_components_update": ("template-components", None),
}


def _template(ctx: _Change) -> list[Item | None]:
    prefix, event_key = _TEMPLATE_FIELDS[ctx.field or ""]
    return _guard(_template_item, ctx, prefix, event_key)


def _template_item(ctx: _Change, prefix: str, event_key: str | None) -> Item:
    template_id = _need(ctx.value, "message_template_id")
    if event_key is None:  # the approved wording itself: its hash tells versions apart
        event, type_ = sha256_hex(canonical(ctx.value)), "components"
    else:
        event = type_ = _need(ctx.value, event_key)
    # The value's hash tells apart distinct events that share id, event and second.
    key = f"{prefix}:{template_id}:{event}:{_time_part(ctx)}:{_value_tag(ctx)}"
    return _ledger_item(ctx, "template_event", key, type_)


def _value_tag(ctx: _Change) -> str:
    """Short hash of a change's value: a redelivery matches, a different event does not."""
    return sha256_hex(canonical(ctx.value))[:16]


def _account(ctx: _Change) -> list[Item | None]:
    return _guard(_account_item, ctx)


def _account_item(ctx: _Change) -> Item:
    event = _need(ctx.value, "event")
    key = f"account:{_text(ctx.entry_id) or ''}:{event}:{_time_part(ctx)}:{_value_tag(ctx)}"
    return _ledger_item(ctx, "account_event", key, event)


_FIELD_MAPPERS: dict[str, Callable[[_Change], list[Item | None]]] = {
    "messages": _array_field({"messages": _inbound_message, "statuses": _status}),
    "smb_message_echoes": _array_field({"message_echoes": _echo}),
    "history": _array_field({"history": _history_chunk, "messages": _history_media}),
    "smb_app_state_sync": _array_field({"state_sync": _state_sync}),
    "user_preferences": _array_field({"user_preferences": _preference}),
    "account_update": _account,
    **{name: _template for name in _TEMPLATE_FIELDS},
}


# --------------------------------------------------------------------------- capture API


def _require_text(obj: dict[str, Any], key: str, name: str | None = None) -> str:
    """``obj[key]`` as a non-blank string, or ValidationError naming the field."""
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(name or key, "must be a non-empty string")
    return value


def _require_object(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise ValidationError(key, "must be a JSON object")
    return value


def _require_time(obj: dict[str, Any], key: str) -> int:
    epoch = parse_time(obj.get(key))
    if epoch is None:
        raise ValidationError(key, "must be epoch seconds or ISO 8601 with Z or an offset")
    return epoch


def _require_body(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValidationError("body", "must be a JSON object")
    return obj


def validate_capture_message(obj: Any) -> None:
    """Check a capture API body; raises ValidationError naming the first bad field.

    Fields: ``request`` (object with ``to``), ``response`` (object; a response without
    a wamid is allowed, since a failed attempt is evidence too), ``sender`` (non-empty
    string) and ``sent_at`` (epoch seconds or ISO 8601 with a zone).
    """
    body = _require_body(obj)
    _require_text(_require_object(body, "request"), "to", "request.to")
    _require_object(body, "response")
    _require_text(body, "sender")
    _require_time(body, "sent_at")


_PHONE = re.compile(r"[\d\s+\-().]+")


def _norm_contact(value: str) -> str:
    """A phone number as Meta writes wa_ids (digits only); a BSUID as given."""
    value = value.strip()
    return re.sub(r"\D", "", value) if _PHONE.fullmatch(value) else value


def _extract(raw: bytes, validate: Callable[[Any], None],
             build: Callable[[bytes, dict[str, Any]], Item]) -> list[Item]:
    """Parse, validate, build one item; any failure quarantines. Never raises."""
    try:
        obj, reason = _parse(raw)
        if reason is not None:
            return [_quarantine(raw, reason)]
        validate(obj)
        return [build(raw, obj)]
    except ValidationError as exc:
        return [_quarantine(raw, f"invalid field {exc}")]
    except Exception as exc:  # the last line of defence: a delivery is never lost
        return [_quarantine(raw, f"extractor error: {type(exc).__name__}")]


def extract_capture_message(raw: bytes) -> list[Item]:
    """The ``outbound`` item of one captured Cloud API send (request + response).

    Keyed ``msg:<wamid>`` when Meta returned a wamid, else ``outbound-attempt:<sha256 of
    raw>`` (a failed send is still evidence). Never raises: a body that does not parse
    or validate becomes one ``quarantine`` item.
    """
    return _extract(raw, validate_capture_message, _outbound_item)


def _first(value: Any) -> dict[str, Any]:
    """The first element of a list of objects, or {}."""
    return _dict(value[0]) if isinstance(value, list) and value else {}


def _outbound_item(raw: bytes, body: dict[str, Any]) -> Item:
    request, response = body["request"], body["response"]
    wamid = _text(_first(response.get("messages")).get("id"))
    mtype = _text(request.get("type"))
    contact = _text(_first(response.get("contacts")).get("wa_id")) or request["to"]
    key = f"msg:{wamid}" if wamid else f"outbound-attempt:{sha256_hex(_as_bytes(raw))}"
    return Item(kind="outbound", key=key, payload={"field": "capture", "capture": body},
                wamid=wamid, contact=_norm_contact(contact) or None,
                business=_text(body.get("phone_number_id")),
                occurred_at=parse_time(body["sent_at"]), type=mtype,
                refs=_send_refs(request, mtype), media=_send_media(request, mtype))


def _send_refs(request: dict[str, Any], mtype: str | None) -> dict[str, str]:
    """Links of a send: the message replied to, or reacted to."""
    refs: dict[str, str] = {}
    context = _text(_dict(request.get("context")).get("message_id"))
    if context:
        refs["context"] = context
    target = _text(_dict(request.get("reaction")).get("message_id"))
    if mtype == "reaction" and target:
        refs["reaction_to"] = target
    return refs


def _send_media(request: dict[str, Any], mtype: str | None) -> tuple[MediaRef, ...]:
    """Media sent by uploaded id (a ``link`` send has nothing to fetch from Meta)."""
    obj = _dict(request.get(mtype)) if mtype in MEDIA_TYPES else {}
    media_id = _text(obj.get("id"))
    if media_id is None:
        return ()
    return (MediaRef(media_id, None, None, _text(obj.get("filename"))),)


# --------------------------------------------------------------------------- consent API


def validate_consent(obj: Any) -> None:
    """Check a consent API body; raises ValidationError naming the first bad field.

    Fields: ``contact`` (wa_id, phone or BSUID), ``scope`` (a token such as
    ``marketing``), ``action`` (``opt_in`` or ``opt_out``), ``source`` (non-empty
    string), ``at`` (epoch seconds or ISO 8601 with a zone), optional ``proof`` (string).
    """
    body = _require_body(obj)
    contact = _norm_contact(_require_text(body, "contact"))
    if not contact or ":" in contact:  # ':' separates the parts of the de-duplication key
        raise ValidationError("contact", "must be a wa_id, phone number or BSUID without ':'")
    _check_token(_require_text(body, "scope"), "scope")
    action = body.get("action")
    if not isinstance(action, str) or action not in CONSENT_ACTIONS:  # a list is unhashable
        raise ValidationError("action", "must be 'opt_in' or 'opt_out'")
    _require_text(body, "source")
    if body.get("proof") is not None and not isinstance(body["proof"], str):
        raise ValidationError("proof", "must be a string when given")
    _require_time(body, "at")


_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")


def _check_token(value: str, name: str) -> None:
    if not _TOKEN.fullmatch(value):
        raise ValidationError(name, "must be letters, digits, '_', '.' or '-'")


def extract_consent(raw: bytes) -> list[Item]:
    """The ``consent`` item of one consent API body.

    Keyed ``consent-api:<contact>:<scope>:<action>:<at as epoch>``. Never raises: a
    body that does not parse or validate becomes one ``quarantine`` item.
    """
    return _extract(raw, validate_consent, _consent_item)


def _consent_item(raw: bytes, body: dict[str, Any]) -> Item:
    contact = _norm_contact(body["contact"])
    at = parse_time(body["at"])
    key = f"consent-api:{contact}:{body['scope']}:{body['action']}:{at}"
    return Item(kind="consent", key=key, payload={"field": "consent_api", "consent": body},
                contact=contact, business=_text(body.get("phone_number_id")),
                occurred_at=at, type=body["action"])


__all__ = [
    "CONVERSATIONAL", "KINDS", "STATUS_RANK", "MEDIA_TYPES", "MediaRef", "Item",
    "canonical", "sha256_hex", "parse_time", "status_supersedes",
    "extract_webhook", "extract_capture_message", "validate_capture_message",
    "extract_consent", "validate_consent",
]
