"""``policies/consent.yaml``: opt-out keywords per language, and what makes consent valid.

Pure but for ``load``, which reads the one file. Errors are PolicyErrors naming file, line,
key and problem (the YAML-node reader of ``retention_policy``). Each version loaded is
sealed as a ``policy`` record (type ``consent``, ``policy_records.register``) and the
ledger reads the version sealed before each message it looks at (``archiver.consent``).

The file (every key optional; no file: no keyword detection, consent valid unless revoked)

    category        the ledger category a keyword opt-out revokes (default ``marketing``)
    require_opt_in  ``true``: a marketing send needs a recorded opt-in before it; ``false``
                    (default): consent is valid unless an opt-out revoked it
    keywords        language code -> list of keywords, each matched as whole words after
                    the search folding (``search.text.terms``: case, accents and width folded;
                    Han, kana and Hangul characters are one term each, so a CJK keyword is
                    found as a run of characters), never inside a longer word
                    ("stopover") nor inside quotation marks or a quoted line (``> ...``)

Detection (:meth:`ConsentPolicy.detect`) returns each keyword found; a match is recorded
as a *detected* opt-out that a person confirms or dismisses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types

from archiver.canonical import sha256_hex
from archiver.retention_policy import NodeReader, read_optional
from archiver.search.text import terms

FILE_NAME = "consent.yaml"
NAME = "consent"
_TOP_KEYS = ("category", "require_opt_in", "keywords")
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?")
_CATEGORY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MAX_KEYWORDS = 500

# Text between quotation marks, and quoted lines, are someone else's words (a quoted
# footer "Reply STOP to opt out"), not the sender's request. Single quotes are not
# quotation marks here: they are apostrophes far more often ("don't stop").
_QUOTED = re.compile(r'"[^"\n]*"|“[^”\n]*”|„[^“”\n]*[“”]|«[^»\n]*»|「[^」\n]*」|『[^』\n]*』|^\s*>.*$', re.MULTILINE)


@dataclass(frozen=True)
class Keyword:
    """One opt-out keyword of a language, with its folded terms."""

    language: str
    text: str
    terms: tuple[str, ...]


@dataclass(frozen=True)
class Match:
    """A keyword found in a message (the keyword as the policy writes it, not the message)."""

    language: str
    keyword: str


@dataclass(frozen=True)
class ConsentPolicy:
    """A loaded ``consent.yaml``."""

    file: str
    raw: bytes = field(repr=False)
    sha256: str
    category: str = "marketing"
    require_opt_in: bool = False
    keywords: tuple[Keyword, ...] = ()

    @classmethod
    def from_yaml(cls, raw: bytes, file: str) -> ConsentPolicy:
        """Validate ``raw`` (``file`` names it in errors). Raises PolicyError."""
        return _Reader(file).policy(raw)

    def detect(self, text: str) -> list[Match]:
        """Every keyword ``text`` holds as whole words outside quotes, in policy order. Never raises."""
        found = terms(_QUOTED.sub(" ", text))
        if not found:
            return []
        by_first = self._by_first()
        hit: set[int] = set()
        for i, term in enumerate(found):  # one pass: only keywords starting with this term are tried
            for index in by_first.get(term, ()):
                wanted = self.keywords[index].terms
                if tuple(found[i:i + len(wanted)]) == wanted:
                    hit.add(index)
        return [Match(self.keywords[i].language, self.keywords[i].text) for i in sorted(hit)]

    def _by_first(self) -> dict[str, list[int]]:
        cached: dict[str, list[int]] | None = self.__dict__.get("_first")
        if cached is None:
            cached = {}
            for index, k in enumerate(self.keywords):
                cached.setdefault(k.terms[0], []).append(index)
            object.__setattr__(self, "_first", cached)  # frozen: a derived index, set once
        return cached


def load(folder: Path) -> ConsentPolicy | None:
    """Read and validate ``folder/consent.yaml``; None without the file. Raises PolicyError."""
    path = folder / FILE_NAME
    raw = read_optional(path)
    return None if raw is None else ConsentPolicy.from_yaml(raw, str(path))


class _Reader(NodeReader):
    def policy(self, raw: bytes) -> ConsentPolicy:
        base = ConsentPolicy(file=self.file, raw=raw, sha256=sha256_hex(raw))
        root = self.compose_or_none(raw)
        if root is None:
            return base
        pairs = self.mapping(root, "", _TOP_KEYS)
        category = self.text(pairs["category"][1], "category") if "category" in pairs else base.category
        if not _CATEGORY.fullmatch(category):
            raise self.error(pairs["category"][1], "category",
                             f"{category!r} is not a category: lower-case letters, digits, '_', '.', '-'")
        require = self.flag(pairs["require_opt_in"][1], "require_opt_in") if "require_opt_in" in pairs else False
        words = self.keywords(pairs["keywords"][1]) if "keywords" in pairs else ()
        return ConsentPolicy(file=self.file, raw=raw, sha256=base.sha256, category=category,
                             require_opt_in=require, keywords=words)

    def keywords(self, node: yaml.Node) -> tuple[Keyword, ...]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, "keywords", "expected a mapping of language codes to keyword lists "
                                               "(e.g. 'en: [STOP, UNSUBSCRIBE]')")
        languages = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
        out: list[Keyword] = []
        for lang, (key, value) in self.mapping(node, "keywords", tuple(languages)).items():
            if not _LANGUAGE.fullmatch(lang):
                raise self.error(key, f"keywords.{lang}", f"{lang!r} is not a language code (en, fr, zh, pt-BR)")
            out.extend(self.language(lang, value))
        if len(out) > MAX_KEYWORDS:
            raise self.error(node, "keywords", f"{len(out)} keywords: at most {MAX_KEYWORDS}")
        return tuple(out)

    def language(self, lang: str, node: yaml.Node) -> list[Keyword]:
        where = f"keywords.{lang}"
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.error(node, where, "expected a list of keywords in quotes (e.g. [\"STOP\", \"UNSUBSCRIBE\"])")
        out = []
        for i, item in enumerate(node.value):
            text = self.text(item, f"{where}[{i}]")
            folded = tuple(terms(text))
            if not folded:
                raise self.error(item, f"{where}[{i}]", f"{text!r} has no letters or digits to match")
            out.append(Keyword(lang, text, folded))
        return out


def describe(policy: ConsentPolicy | None) -> dict[str, Any] | None:
    """The policy as ``archiver policy check --json`` shows it (None: no file)."""
    if policy is None:
        return None
    languages: dict[str, list[str]] = {}
    for k in policy.keywords:
        languages.setdefault(k.language, []).append(k.text)
    return {"file": policy.file, "sha256": policy.sha256, "category": policy.category,
            "require_opt_in": policy.require_opt_in, "keywords": languages}
