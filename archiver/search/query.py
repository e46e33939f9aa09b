"""The search query language: parsed once into a tree that every backend compiles.

Grammar (``NOT`` binds tightest, then ``AND``, then ``OR``; adjacent operands are ANDed)::

    query   := or EOF
    or      := and ("OR" and)*
    and     := not (["AND"] not)*
    not     := "NOT" not | atom
    atom    := "(" or ")" | '"' phrase '"' ["*"] | word ["*"] | name ":" value | name ':"' value '"'

Operators are upper case; ``and``/``or``/``not`` are ordinary words. A ``-`` before an
operand (``refund -chargeback``, ``-"a phrase"``, ``-(a OR b)``) is ``NOT``; inside a word
(``e-mail``) it is part of the word. A filter value may be quoted (``contact:"+1 555 0100"``).
Filters:
``from: to: contact: number:`` (exact id, a leading ``+`` is ignored), ``direction:in|out``,
``channel:customer|app|api|history``, ``kind:`` (one of :data:`DOCUMENT_KINDS`),
``type: wamid:`` (exact), ``has:media``,
``after:`` (inclusive) and ``before:`` (exclusive) taking ``2026-01-01`` or
``2026-01-01T10:00:00Z`` in UTC.

A word that folds to several terms (``e-mail``, ``東京``) means those terms next to each
other, like a phrase. Every error is a :class:`QuerySyntaxError` carrying the 0-based
character position of the offending part. This module is pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias

from archiver.errors import QuerySyntaxError
from archiver.search import text

OPERATORS = ("AND", "OR", "NOT")
DOCUMENT_KINDS = ("message", "echo", "outbound", "history_message", "edit", "revoke")
"""The record kinds that become search documents (the indexer indexes these)."""
ID_FILTERS = {"from": "from", "to": "to", "contact": "contact", "number": "number"}
EXACT_FILTERS = {"type": "type", "wamid": "wamid"}
ENUM_FILTERS = {
    "direction": ("in", "out"),
    "channel": ("customer", "app", "api", "history"),
    "kind": DOCUMENT_KINDS,
}
FILTERS = (*ID_FILTERS, *EXACT_FILTERS, *ENUM_FILTERS, "has", "after", "before")
CONTACT_ALIASES: ContextVar[Callable[[str], tuple[str, ...]] | None] = ContextVar("contact_aliases", default=None)
"""When set (``identity.contact_aliases``), ``contact:X`` matches any of the identifiers it gives for X
(the contact identity's wa_id/phone and BSUID): expanded at query time, no reindexing."""

_FILTER_SYNTAX = re.compile(r"([A-Za-z_]+):(.*)", re.DOTALL)
_PHONE = re.compile(r"[\d\s+\-().]+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_TIME_FORMATS = ((_DATE, "%Y-%m-%d"), (_DATETIME, "%Y-%m-%dT%H:%M:%SZ"))
# Bounds that keep parsing off Python's recursion limit and compiled queries well inside
# OpenSearch's bool clause limit (1024) and FTS5's expression depth (256).
MAX_DEPTH = 16
MAX_LEAVES = 64


# --- the tree -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Typed:
    """Text as typed, matched by its folded terms (the three text leaves below)."""

    text: str

    @property
    def terms(self) -> tuple[str, ...]:
        """The folded terms (see :mod:`archiver.search.text`)."""
        return tuple(text.terms(self.text))


@dataclass(frozen=True)
class Word(_Typed):
    """A word as typed; it matches its folded terms next to each other."""


@dataclass(frozen=True)
class Prefix(_Typed):
    """``word*``: the folded terms next to each other, the last one as a prefix."""


@dataclass(frozen=True)
class Phrase(_Typed):
    """``"a phrase"``: the folded terms next to each other, in order."""


@dataclass(frozen=True)
class Field:
    """An exact match on a document field (``has:media`` is ``Field("has_media", True)``)."""

    name: str
    value: str | bool


@dataclass(frozen=True)
class After:
    """``time >= epoch`` (epoch seconds, UTC)."""

    epoch: int


@dataclass(frozen=True)
class Before:
    """``time < epoch`` (epoch seconds, UTC)."""

    epoch: int


@dataclass(frozen=True)
class And:
    """Every item matches. Always two or more items, never a nested ``And``."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """At least one item matches. Always two or more items, never a nested ``Or``."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """The item does not match (alone, this is every document minus the matches)."""

    item: Node


Text: TypeAlias = Word | Prefix | Phrase
Node: TypeAlias = Word | Prefix | Phrase | Field | After | Before | And | Or | Not


def conjoin(items: list[Node]) -> Node:
    """``And`` of ``items``, flattened; a single item stands alone."""
    flat = [leaf for item in items for leaf in (item.items if isinstance(item, And) else (item,))]
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def disjoin(items: list[Node]) -> Node:
    """``Or`` of ``items``, flattened; a single item stands alone."""
    flat = [leaf for item in items for leaf in (item.items if isinstance(item, Or) else (item,))]
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


# --- lexing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lexeme:
    kind: str  # "(", ")", "AND", "OR", "NOT", "leaf", "end"
    pos: int
    node: Node | None = None


def _lex(query: str) -> Iterator[_Lexeme]:
    """Cut ``query`` into lexemes. Raises QuerySyntaxError for a bad leaf."""
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            yield _Lexeme(ch, i)
            i += 1
        elif ch == "-" and i + 1 < n and not query[i + 1].isspace() and query[i + 1] not in ")-":
            yield _Lexeme("NOT", i)  # -term: an operand follows at once
            i += 1
        elif ch == '"':
            end = query.find('"', i + 1)
            if end < 0:
                raise QuerySyntaxError("unclosed quote", i)
            # "a phrase"* ends in a prefix, like word*.
            starred = query.startswith("*", end + 1)
            node = Prefix(query[i + 1:end]) if starred else Phrase(query[i + 1:end])
            yield _Lexeme("leaf", i, _searchable(node, i))
            i = end + 1 + starred
        else:
            end = i
            while end < n and not query[end].isspace() and query[end] not in '()"':
                end += 1
            if query.startswith('"', end) and (m := _FILTER_SYNTAX.fullmatch(query[i:end])) and not m.group(2):
                close = query.find('"', end + 1)  # name:"quoted value"
                if close < 0:
                    raise QuerySyntaxError("unclosed quote", end)
                yield _Lexeme("leaf", i, _filter(m.group(1).lower(), query[end + 1:close], i))
                i = close + 1
                continue
            yield _word(query[i:end], i)
            i = end
    yield _Lexeme("end", n)


def _word(raw: str, pos: int) -> _Lexeme:
    """An operator, a filter, a prefix or a plain word. Raises QuerySyntaxError."""
    if raw in OPERATORS:
        return _Lexeme(raw, pos)
    m = _FILTER_SYNTAX.fullmatch(raw)
    if m:
        return _Lexeme("leaf", pos, _filter(m.group(1).lower(), m.group(2), pos))
    if raw.endswith("*"):
        return _Lexeme("leaf", pos, _searchable(Prefix(raw[:-1]), pos))
    return _Lexeme("leaf", pos, _searchable(Word(raw), pos))


def _searchable(node: Text, pos: int) -> Text:
    """Return ``node`` if it has at least one term. Raises QuerySyntaxError otherwise."""
    if not node.terms:
        raise QuerySyntaxError("nothing searchable here (need a letter, digit or emoji)", pos)
    return node


def _filter(name: str, value: str, pos: int) -> Node:
    """Build the node of ``name:value``. Raises QuerySyntaxError for a bad name or value."""
    vpos = pos + len(name) + 1
    if name not in FILTERS:
        raise QuerySyntaxError(f"unknown filter {name!r} (quote the text to search for it)", pos)
    if not value:
        raise QuerySyntaxError(f"filter {name!r} needs a value", vpos)
    if name in ID_FILTERS:
        # Business numbers and wa_ids are stored as digits: "+1 (555) 0100" is 15550100.
        number = re.sub(r"\D", "", value) if _PHONE.fullmatch(value) else value
        if not number:
            raise QuerySyntaxError(f"filter {name!r} needs a value", vpos)
        aliases = CONTACT_ALIASES.get() if name == "contact" else None
        if aliases is not None:
            return disjoin([Field("contact", v) for v in dict.fromkeys((number, *aliases(number)))])
        return Field(ID_FILTERS[name], number)
    if name in EXACT_FILTERS:
        return Field(EXACT_FILTERS[name], value)
    if name in ENUM_FILTERS:
        return _enum(name, value, vpos)
    if name == "has":
        if value.lower() != "media":
            raise QuerySyntaxError("has: only knows 'media'", vpos)
        return Field("has_media", True)
    epoch = parse_time(value, vpos)
    return After(epoch) if name == "after" else Before(epoch)


def _enum(name: str, value: str, vpos: int) -> Field:
    """``direction:`` or ``channel:`` with an allowed value. Raises QuerySyntaxError."""
    allowed = ENUM_FILTERS[name]
    if value.lower() not in allowed:
        raise QuerySyntaxError(f"{name}: must be one of {', '.join(allowed)}", vpos)
    return Field(name, value.lower())


def parse_time(value: str, pos: int) -> int:
    """``2026-01-01`` or ``2026-01-01T10:00:00Z`` (UTC) as epoch seconds.

    Raises QuerySyntaxError (at ``pos``) for anything else or an impossible date.
    """
    bad = "bad date (use 2026-01-31 or 2026-01-31T10:00:00Z)"
    for pattern, fmt in _TIME_FORMATS:
        if pattern.fullmatch(value):
            try:
                return int(datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp())
            except ValueError as exc:  # the shape is right but the day is not (2026-02-30)
                raise QuerySyntaxError(bad, pos) from exc
    raise QuerySyntaxError(bad, pos)


# --- parsing --------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the lexemes, one method per grammar rule."""

    def __init__(self, query: str) -> None:
        self.lexemes = list(_lex(query))
        self.i = 0
        self.depth = 0
        leaves = [lexeme for lexeme in self.lexemes if lexeme.kind == "leaf"]
        if len(leaves) > MAX_LEAVES:
            raise QuerySyntaxError(f"too many terms and filters (at most {MAX_LEAVES})", leaves[MAX_LEAVES].pos)

    def peek(self) -> _Lexeme:
        """The next lexeme, left in place."""
        return self.lexemes[self.i]

    def take(self) -> _Lexeme:
        """The next lexeme, consumed."""
        self.i += 1
        return self.lexemes[self.i - 1]

    def deeper(self, at: _Lexeme) -> None:
        """Enter one more ``(`` or ``NOT``. Raises QuerySyntaxError past :data:`MAX_DEPTH`."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QuerySyntaxError(f"nested too deeply (at most {MAX_DEPTH} levels)", at.pos)

    def operand_follows(self, op: _Lexeme) -> None:
        """Raise QuerySyntaxError at ``op`` unless an operand comes next."""
        if self.peek().kind in ("end", ")", "AND", "OR"):
            raise QuerySyntaxError(f"{op.kind} needs something after it", op.pos)

    def query(self) -> Node:
        """``query := or EOF``."""
        if self.peek().kind == "end":
            raise QuerySyntaxError("empty query", 0)
        node = self.disjunction()
        extra = self.peek()
        if extra.kind != "end":  # only a ")" can stop the top-level disjunction early
            raise QuerySyntaxError("unmatched ')'", extra.pos)
        return node

    def disjunction(self) -> Node:
        """``or := and ("OR" and)*``."""
        items = [self.conjunction()]
        while self.peek().kind == "OR":
            self.operand_follows(self.take())
            items.append(self.conjunction())
        return disjoin(items)

    def conjunction(self) -> Node:
        """``and := not (["AND"] not)*``: adjacent operands are ANDed."""
        items = [self.negation()]
        while self.peek().kind not in ("end", ")", "OR"):
            if self.peek().kind == "AND":
                self.operand_follows(self.take())
            items.append(self.negation())
        return conjoin(items)

    def negation(self) -> Node:
        """``not := "NOT" not | atom``."""
        if self.peek().kind != "NOT":
            return self.atom()
        op = self.take()
        self.operand_follows(op)
        self.deeper(op)
        node = Not(self.negation())
        self.depth -= 1
        return node

    def atom(self) -> Node:
        """``atom := "(" or ")" | leaf``."""
        lexeme = self.take()
        if lexeme.kind == "leaf" and lexeme.node is not None:
            return lexeme.node
        if lexeme.kind == "(":
            return self.group(lexeme)
        if lexeme.kind == ")":
            raise QuerySyntaxError("unmatched ')'", lexeme.pos)
        raise QuerySyntaxError(f"{lexeme.kind} needs something before it", lexeme.pos)

    def group(self, opening: _Lexeme) -> Node:
        """The inside of ``( … )``, after ``opening``."""
        if self.peek().kind == ")":
            raise QuerySyntaxError("empty parentheses", opening.pos)
        self.deeper(opening)
        node = self.disjunction()
        if self.take().kind != ")":
            raise QuerySyntaxError("unclosed '('", opening.pos)
        self.depth -= 1
        return node


def parse(query: str) -> Node:
    """Parse ``query`` into its tree. Raises QuerySyntaxError with the position of the fault."""
    return _Parser(query).query()


# --- rendering and walking --------------------------------------------------------------


def to_text(node: Node) -> str:
    """Render ``node`` as a query string that :func:`parse` turns back into ``node``."""
    if isinstance(node, Or):
        return " OR ".join(to_text(item) for item in node.items)
    if isinstance(node, And):
        return " ".join(_grouped(item, Or) for item in node.items)
    if isinstance(node, Not):
        return "NOT " + _grouped(node.item, (And, Or))
    return _leaf_text(node)


def _grouped(node: Node, kinds: type | tuple[type, ...]) -> str:
    """Render ``node``, in parentheses if it is one of ``kinds``."""
    inner = to_text(node)
    return f"({inner})" if isinstance(node, kinds) else inner


def _leaf_text(node: Node) -> str:
    """Render one leaf."""
    if isinstance(node, Word):
        return node.text
    if isinstance(node, Prefix):
        return (f'"{node.text}"' if _needs_quotes(node.text) else node.text) + "*"
    if isinstance(node, Phrase):
        return f'"{node.text}"'
    if isinstance(node, Field):
        if node.name == "has_media":
            return "has:media"
        value = str(node.value)
        return f'{node.name}:"{value}"' if _needs_quotes(value) or not value else f"{node.name}:{value}"
    if isinstance(node, (After, Before)):
        stamp = datetime.fromtimestamp(node.epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{'after' if isinstance(node, After) else 'before'}:{stamp}"
    raise TypeError(f"not a query node: {type(node).__name__}")


def _needs_quotes(raw: str) -> bool:
    """True if ``raw`` would not lex back as one bare word."""
    return raw in OPERATORS or bool(_FILTER_SYNTAX.fullmatch(raw)) or raw.startswith("-") or \
        any(c.isspace() or c in '()"' for c in raw)


def highlights(node: Node, negated: bool = False) -> list[text.Pattern]:
    """The text patterns a matching document may contain (not those under an odd ``NOT``)."""
    if isinstance(node, Not):
        return highlights(node.item, not negated)
    if isinstance(node, (And, Or)):
        return [p for item in node.items for p in highlights(item, negated)]
    if isinstance(node, (Word, Prefix, Phrase)) and not negated:
        return [(node.terms, isinstance(node, Prefix))]
    return []
