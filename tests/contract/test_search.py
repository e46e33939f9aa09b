"""One conformance suite for every SearchIndex backend: SQLite FTS5 and a real OpenSearch node.

Every query case names the seqs it must return, so a bug both backends share still fails,
and the backends are also compared with each other on the whole table and on queries
generated from the grammar. OpenSearch comes from ``ARCHIVER_TEST_OPENSEARCH_URL``
(exported by scripts/test); without it the OpenSearch tests fail, they never skip.
"""

from __future__ import annotations

import itertools
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from archiver.errors import ConfigError, QuerySyntaxError, SearchUnavailable
from archiver.search import IndexState, SearchIndex, SearchResult, open_index
from archiver.search import query as ql

RUN = uuid.uuid4().hex[:8]  # a unique alias prefix per run, so parallel runs never collide
_ALIASES = itertools.count()
BACKENDS = ["fts5", pytest.param("opensearch", marks=pytest.mark.opensearch)]
ALICE, BRUNO, CHEN, DANA = "15550000001", "15550000002", "8613800000003", "966500000004"
BSUID = "US.13491208655302741918"
LINE1, LINE2 = "15559990000", "15559991111"


def at(stamp: str) -> int:
    """Epoch seconds of an ISO-8601 UTC time."""
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())


def doc(seq: int, stamp: str, body: str, contact: str = ALICE, **fields: Any) -> dict[str, Any]:
    """A document as the indexer builds it; inbound from ``contact`` unless told otherwise."""
    out = {"direction": "in", **fields}
    number = fields.get("number", LINE1)
    sender, recipient = (contact, number) if out["direction"] == "in" else (number, contact)
    return {
        "seq": seq, "wamid": f"wamid.HBgL{seq:04d}", "kind": "message", "type": "text",
        "channel": "customer", "time": at(stamp), "from": sender, "to": recipient,
        "contact": contact, "contact_name": "Someone", "number": number, "text": body,
        "has_media": False, "mime_type": None, "status": "delivered", "edit_of": None,
        "revoked": False, "retention_class": "default", "indexer_version": 3, **out,
    }


LONG = " ".join(f"filler{i % 50}" for i in range(560))[:4000] + " needleinhaystack end"
LONG = LONG + "x" * (4096 - len(LONG))

CORPUS = [
    doc(1, "2026-01-05T09:00:00Z", "Hello, I would like to order the blue widget"),
    doc(2, "2026-01-05T09:05:00Z", "Sure! The blue widget costs $20. Invoice attached",
        direction="out", channel="app", kind="echo"),
    doc(3, "2026-01-05T09:10:00Z", "Here is my résumé photo", type="image", has_media=True,
        mime_type="image/jpeg"),
    doc(4, "2026-01-10T12:00:00Z", "RESUME of the meeting: quarterly numbers look good", BRUNO),
    doc(5, "2026-01-10T12:30:00Z", "Thanks Bruno, resumed shipping today", BRUNO,
        direction="out", channel="api", kind="outbound"),
    doc(6, "2026-01-15T08:00:00Z", "我们明天在东京见面", CHEN),
    doc(7, "2026-01-15T08:01:00Z", "東京都に行きました", CHEN),
    doc(8, "2026-01-15T08:02:00Z", "서울에서 만나요", CHEN, direction="out", channel="app", kind="echo"),
    doc(9, "2026-01-20T10:00:00Z", "مرحبا، هل الطلب جاهز؟", DANA),
    doc(10, "2026-01-20T10:01:00Z", "مَرْحَبًا بِكُم", DANA),
    doc(11, "2026-01-21T18:00:00Z", "Great job 🎉🎉 see you"),
    doc(12, "2026-01-21T18:01:00Z", "👍", BRUNO),
    doc(13, "2026-01-22T09:00:00Z", "Résumé attached, see CV_Alice.pdf", type="document",
        has_media=True, mime_type="application/pdf"),
    doc(14, "2026-01-23T09:00:00Z", LONG, BRUNO),
    doc(15, "2026-01-05T09:30:00Z", "Hello, I would like to order the red widget", kind="edit", edit_of=1),
    doc(16, "2026-01-24T20:00:00Z", "oops wrong chat: secret plan", BRUNO, revoked=True),
    doc(17, "2026-01-24T20:01:00Z", "", BRUNO, kind="revoke", type=None, edit_of=16),
    doc(18, "2025-12-20T15:00:00Z", "old history message about the invoice", channel="history",
        kind="history_message"),
    doc(19, "2026-01-25T07:00:00Z", "Your order #4521 has shipped", DANA, direction="out",
        channel="api", kind="outbound", type="template"),
    doc(20, "2026-01-25T07:30:00Z", "Button reply: Yes, confirm order", DANA, type="interactive"),
    doc(21, "2026-01-26T11:00:00Z", "Office location: Main Street 5", CHEN, type="location"),
    doc(22, "2026-01-26T11:05:00Z", "", CHEN, type="audio", has_media=True, mime_type="audio/ogg"),
    doc(23, "2026-01-27T09:00:00Z", "Please e-mail me at alice@example.com"),
    doc(24, "2026-01-27T09:10:00Z", "don't forget the invoice", BRUNO),
    doc(25, "2026-01-28T09:00:00Z", "Straße oder Strasse?", DANA),
    doc(26, "2026-01-28T09:05:00Z", "ÇA VA? Ça va très bien", DANA),
    doc(27, "2026-01-29T09:00:00Z", "Mañana llega el pedido", CHEN),
    doc(28, "2026-01-31T23:59:59Z", "boundary one second before february", CHEN),
    doc(29, "2026-02-01T00:00:00Z", "boundary exactly at midnight", CHEN),
    doc(30, "2026-02-10T10:00:00Z", "february invoice reminder", BRUNO, direction="out",
        channel="app", kind="echo"),
    doc(31, "2026-03-03T10:00:00Z", "march invoice overdue", BRUNO),
    doc(32, "2026-03-04T10:00:00Z", "नमस्ते दुनिया", DANA),
    doc(33, "2026-03-05T10:00:00Z", "same second tie A", CHEN),
    doc(34, "2026-03-05T10:00:00Z", "same second tie B", CHEN),
    doc(35, "2026-03-06T10:00:00Z", "bsuid contact says hello", BSUID),
    doc(36, "2026-03-07T10:00:00Z", "second line hello", number=LINE2),
    doc(37, "2026-03-08T10:00:00Z", "", BRUNO, type="sticker", has_media=True, mime_type="image/webp"),
    doc(38, "2026-03-09T10:00:00Z", "<script>alert('x')</script> & hello", DANA),
    doc(39, "2026-04-01T10:00:00Z", "新しいコンピューターを買った", CHEN),
    doc(40, "2026-04-02T10:00:00Z", "ordering more widgets: widget-pack x3", DANA),
]
ALL = {d["seq"] for d in CORPUS}
TEXTLESS = {17, 22, 37}

# (query, the seqs it must return)
CASES: list[tuple[str, set[int]]] = [
    # words, implicit AND, case and accents
    ("widget", {1, 2, 15, 40}),
    ("blue widget", {1, 2}),
    ("resume", {3, 4, 13}),
    ("RÉSUMÉ", {3, 4, 13}),
    ("resumed", {5}),
    ("hello", {1, 15, 35, 36, 38}),
    ("tres bien", {26}),
    ("ça", {26}),
    ("manana", {27}),
    ("strasse", {25}),
    ("straße", {25}),
    # phrases
    ('"blue widget"', {1, 2}),
    ('"widget blue"', set()),
    ('"order the"', {1, 15}),
    ('"the invoice"', {18, 24}),
    # words that fold to several terms behave like phrases
    ("e-mail", {23}),
    ("don't", {24}),
    ("alice@example.com", {23}),
    ("CV_Alice.pdf", {13}),
    ("4521", {19}),
    # boolean operators and parentheses
    ("invoice", {2, 18, 24, 30, 31}),
    ("invoice AND february", {30}),
    ("invoice OR resume", {2, 3, 4, 13, 18, 24, 30, 31}),
    ("invoice NOT february", {2, 18, 24, 31}),
    ("NOT invoice", ALL - {2, 18, 24, 30, 31}),
    ("NOT (invoice OR hello)", ALL - {2, 18, 24, 30, 31, 1, 15, 35, 36, 38}),
    ("(widget OR invoice) blue", {1, 2}),
    ("widget OR invoice blue", {1, 2, 15, 40}),
    ("hello NOT (widget OR bsuid)", {36, 38}),
    ("NOT NOT widget", {1, 2, 15, 40}),
    # prefixes
    ("inv*", {2, 18, 24, 30, 31}),
    ("resum*", {3, 4, 5, 13}),
    ("wid*", {1, 2, 15, 40}),
    ("blue wid*", {1, 2}),
    ('"the blue wid"*', {1, 2}),
    ('"order the bl"*', {1}),
    ('"the wid"*', set()),
    ("e-ma*", {23}),
    ("widget-p*", {40}),
    # filters
    (f"from:{ALICE}", {1, 3, 11, 13, 15, 18, 23, 36}),
    (f"from:+{ALICE}", {1, 3, 11, 13, 15, 18, 23, 36}),
    (f"to:{ALICE}", {2}),
    (f"contact:{ALICE}", {1, 2, 3, 11, 13, 15, 18, 23, 36}),
    (f"contact:{BSUID}", {35}),
    (f"number:+{LINE2}", {36}),
    ("direction:out", {2, 5, 8, 19, 30}),
    ("channel:app", {2, 8, 30}),
    ("channel:api", {5, 19}),
    ("channel:history", {18}),
    ("kind:echo", {2, 8, 30}),
    ("kind:edit", {15}),
    ("kind:revoke", {17}),
    ("kind:history_message", {18}),
    ("type:image", {3}),
    ("type:template", {19}),
    ("has:media", {3, 13, 22, 37}),
    ("wamid:wamid.HBgL0007", {7}),
    ("wamid:wamid.hbgl0007", set()),
    ("kind:Echo", {2, 8, 30}),  # an enum, like direction: and channel:
    # filters only, mixed with words, negated, in OR
    ("has:media direction:in", {3, 13, 22, 37}),
    (f"has:media NOT contact:{ALICE}", {22, 37}),
    ("NOT direction:in", {2, 5, 8, 19, 30}),
    (f"contact:{DANA} order", {19, 20}),
    ("channel:history OR kind:revoke", {17, 18}),
    ("NOT type:text", {3, 13, 17, 19, 20, 21, 22, 37}),
    # dates: after is inclusive, before exclusive, UTC
    ("after:2026-03-01", {31, 32, 33, 34, 35, 36, 37, 38, 39, 40}),
    ("before:2026-01-01", {18}),
    ("after:2026-02-01 before:2026-03-01", {29, 30}),
    ("after:2026-02-01T00:00:00Z", {29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40}),
    ("before:2026-02-01T00:00:00Z after:2026-01-31", {28}),
    ("before:2026-02-01T00:00:01Z after:2026-01-31T23:59:59Z", {28, 29}),
    ("invoice before:2026-01-01", {18}),
    # non-Latin scripts: a 2- or 3-character word inside an unspaced sentence
    ("东京", {6}),
    ("明天", {6}),
    ("東京", {7}),
    ("東京都", {7}),
    ("京都", {7}),
    ("コンピューター", {39}),
    ("コンピュ", {39}),
    ("買った", {39}),
    ("서울", {8}),
    ("만나요", {8}),
    ("مرحبا", {9, 10}),
    ("مَرْحَبًا", {9, 10}),
    ("الطلب", {9}),
    ("नमस्ते", {32}),
    # emoji
    ("🎉", {11}),
    ("👍", {12}),
    ("🎉 job", {11}),
    ("👍🏽", {12}),
    # very long messages
    ("needleinhaystack", {14}),
    ("filler7 needleinhaystack", {14}),
    # edited and revoked messages stay findable
    ("red widget", {15}),
    ("secret plan", {16}),
    (f"secret contact:{BRUNO}", {16}),
    # HTML in text is plain text
    ("script alert", {38}),
]


# --- fixtures ---------------------------------------------------------------------------


def opensearch_url() -> str:
    """The test node's base URL. Fails (never skips) when scripts/test did not export it."""
    url = os.environ.get("ARCHIVER_TEST_OPENSEARCH_URL", "")
    if not url:
        pytest.fail("ARCHIVER_TEST_OPENSEARCH_URL is not set: run the suite through scripts/test, "
                    "which starts OpenSearch and exports it", pytrace=False)
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def new_index(backend: str, tmp: Path) -> SearchIndex:
    """An empty index of ``backend``; OpenSearch gets a fresh alias of this run."""
    if backend == "fts5":
        return open_index(f"sqlite:///{tmp / 'search.db'}")
    return open_index(f"{opensearch_url()}/archiver-test-{RUN}-{next(_ALIASES)}?replicas=0")


def dispose(index: SearchIndex) -> None:
    """Remove what a test created on the OpenSearch node."""
    drop = getattr(index, "drop", None)
    if drop is not None:
        drop()


@pytest.fixture
def make_index(tmp_path: Path) -> Iterator[Callable[[str], SearchIndex]]:
    """A factory of empty indices, disposed of after the test."""
    made: list[SearchIndex] = []

    def make(backend: str) -> SearchIndex:
        made.append(new_index(backend, tmp_path / str(len(made))))
        return made[-1]

    yield make
    for index in made:
        dispose(index)


def _loaded(backend: str, tmp: Path) -> Iterator[SearchIndex]:
    index = new_index(backend, tmp)
    try:
        index.index(CORPUS[:20])  # two calls: the second must not disturb the first
        index.index(CORPUS[20:])
        yield index
    finally:
        dispose(index)


@pytest.fixture(scope="module")
def fts5_corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchIndex]:
    """The corpus in FTS5, shared by the read-only tests of this module."""
    yield from _loaded("fts5", tmp_path_factory.mktemp("fts5"))


@pytest.fixture(scope="module")
def opensearch_corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchIndex]:
    """The corpus in OpenSearch, shared by the read-only tests of this module."""
    yield from _loaded("opensearch", tmp_path_factory.mktemp("os"))


@pytest.fixture(params=BACKENDS)
def corpus(request: pytest.FixtureRequest) -> SearchIndex:
    """The corpus index of each backend in turn."""
    index: SearchIndex = request.getfixturevalue(f"{request.param}_corpus")
    return index


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend's name in turn, for tests that write."""
    name: str = request.param
    return name


def seqs(result: SearchResult) -> list[int]:
    return [hit.seq for hit in result.hits]


def everything(index: SearchIndex, query: str, sort: str = "newest") -> SearchResult:
    """All matches of ``query`` on one page (the corpus is small)."""
    return index.search(query, size=100, sort=sort)


# --- the interface ------------------------------------------------------------------------


def test_every_protocol_method_exists(corpus: SearchIndex) -> None:
    assert isinstance(corpus, SearchIndex)
    for name in ("index", "update", "delete", "search", "conversation", "matching_seqs", "max_seq", "state", "mark",
                 "rebuild", "reset", "ping"):
        assert callable(getattr(corpus, name))


def test_ping(corpus: SearchIndex) -> None:
    corpus.ping()


# --- the query table ----------------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[q for q, _ in CASES])
def test_query_case(corpus: SearchIndex, query: str, expected: set[int]) -> None:
    result = everything(corpus, query)
    assert sorted(seqs(result)) == sorted(expected)
    assert result.total == len(expected)


@pytest.mark.opensearch
def test_backends_agree_on_every_case(fts5_corpus: SearchIndex, opensearch_corpus: SearchIndex) -> None:
    for query, _ in CASES:
        a, b = everything(fts5_corpus, query), everything(opensearch_corpus, query)
        assert (seqs(a), a.total, a.facets) == (seqs(b), b.total, b.facets), query
        assert [h.snippet for h in a.hits] == [h.snippet for h in b.hits], query


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[q for q, _ in CASES])
def test_matching_seqs_are_the_query_case_in_seq_order_within_the_window(corpus: SearchIndex, query: str,
                                                                         expected: set[int]) -> None:
    """What a litigation hold reads: every matching seq in ``(after, through]``, ascending."""
    assert corpus.matching_seqs(query, after=0, through=10**9) == sorted(expected)
    assert corpus.matching_seqs(query, after=2, through=15) == sorted(s for s in expected if 2 < s <= 15)
    got, after = [], 0
    while found := corpus.matching_seqs(query, after=after, through=10**9, limit=1):  # read on from the last
        got, after = got + found, found[-1]
    assert got == sorted(expected)


def test_matching_seqs_refuse_a_bad_query(corpus: SearchIndex) -> None:
    with pytest.raises(QuerySyntaxError):
        corpus.matching_seqs("invoice AND (blue", after=0, through=100)


def test_syntax_errors_come_from_search(corpus: SearchIndex) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        corpus.search("invoice AND (blue")
    assert info.value.position == 12


@pytest.mark.parametrize("kwargs", [{"sort": "sideways"}, {"page": 0}, {"size": 0}, {"size": 501},
                                    {"page": 501, "size": 20}])
def test_bad_paging_is_refused(corpus: SearchIndex, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        corpus.search("invoice", **kwargs)


# --- order, pages, facets, hits --------------------------------------------------------------


def test_newest_first_with_seq_tie_break(corpus: SearchIndex) -> None:
    assert seqs(everything(corpus, "tie")) == [34, 33]
    assert seqs(everything(corpus, "invoice")) == [31, 30, 24, 2, 18]


def test_oldest_first(corpus: SearchIndex) -> None:
    assert seqs(everything(corpus, "tie", sort="oldest")) == [33, 34]
    assert seqs(everything(corpus, "invoice", sort="oldest")) == [18, 2, 24, 30, 31]


def test_pages_partition_the_result(corpus: SearchIndex) -> None:
    full = everything(corpus, "NOT invoice")
    pages = [corpus.search("NOT invoice", page=p, size=7) for p in range(1, 7)]
    assert [s for page in pages for s in seqs(page)] == seqs(full)
    assert {page.total for page in pages} == {len(ALL) - 5}
    assert all(page.facets == full.facets for page in pages)
    assert [len(page.hits) for page in pages] == [7, 7, 7, 7, 7, 0]


def test_facets_cover_the_whole_result(corpus: SearchIndex) -> None:
    result = corpus.search("invoice OR resume", size=1)
    assert result.total == 8 and len(result.hits) == 1
    assert result.facets == {
        "direction": {"in": 6, "out": 2},
        "channel": {"app": 2, "customer": 5, "history": 1},
        "type": {"document": 1, "image": 1, "text": 6},
        "month": {"2025-12": 1, "2026-01": 5, "2026-02": 1, "2026-03": 1},
    }


def test_facets_skip_missing_values(corpus: SearchIndex) -> None:
    result = corpus.search("kind:revoke OR kind:edit")
    assert result.facets["type"] == {"text": 1}
    assert result.facets["direction"] == {"in": 2}


def test_hit_carries_participants_and_flags(corpus: SearchIndex) -> None:
    (hit,) = corpus.search("photo").hits
    assert (hit.seq, hit.wamid, hit.kind, hit.type, hit.time) == (3, "wamid.HBgL0003", "message", "image",
                                                                  at("2026-01-05T09:10:00Z"))
    assert (hit.sender, hit.recipient, hit.contact, hit.number) == (ALICE, LINE1, ALICE, LINE1)
    assert hit.has_media and not hit.revoked and hit.edit_of is None
    assert ALICE not in repr(hit) and "photo" not in repr(hit)
    (edit,) = corpus.search("red widget").hits
    assert (edit.kind, edit.edit_of) == ("edit", 1)
    (revoked,) = corpus.search("secret").hits
    assert revoked.revoked


def test_snippets_mark_matches_in_escaped_original(corpus: SearchIndex) -> None:
    (hit,) = corpus.search("hello script").hits
    assert hit.snippet == ("&lt;<mark>script</mark>&gt;alert(&#x27;x&#x27;)&lt;/<mark>script</mark>&gt; "
                           "&amp; <mark>hello</mark>")
    assert [h.snippet for h in corpus.search("resume type:image").hits] == ["Here is my <mark>résumé</mark> photo"]
    assert corpus.search("东京").hits[0].snippet == "我们明天在<mark>东京</mark>见面"
    assert corpus.search('"blue widget"', sort="oldest").hits[0].snippet == \
        "Hello, I would like to order the <mark>blue widget</mark>"


def test_long_message_snippet_is_a_window_around_the_match(corpus: SearchIndex) -> None:
    (hit,) = corpus.search("needleinhaystack").hits
    assert "<mark>needleinhaystack</mark>" in hit.snippet
    assert hit.snippet.startswith("…") and len(hit.snippet) < 300


def test_filter_only_snippet_is_the_start_of_the_text(corpus: SearchIndex) -> None:
    hits = corpus.search("wamid:wamid.HBgL0001").hits
    assert [h.snippet for h in hits] == ["Hello, I would like to order the blue widget"]


# --- conversation and max_seq ----------------------------------------------------------------


def test_conversation_latest(corpus: SearchIndex) -> None:
    docs = corpus.conversation(CHEN, size=4)
    assert [d["seq"] for d in docs] == [29, 33, 34, 39]
    assert docs[-1]["text"] == "新しいコンピューターを買った" and "indexer_version" not in docs[-1]


def test_conversation_window_around_a_seq(corpus: SearchIndex) -> None:
    around = corpus.conversation("+" + CHEN, around_seq=27, size=5)
    assert [d["seq"] for d in around] == [21, 22, 27, 28, 29]
    assert [d["seq"] for d in corpus.conversation(CHEN, around_seq=33, size=3)] == [29, 33, 34]
    assert [d["seq"] for d in corpus.conversation(CHEN, around_seq=6, size=4)] == [6, 7, 8, 21]


def test_conversation_of_a_foreign_or_unknown_seq_is_empty(corpus: SearchIndex) -> None:
    assert corpus.conversation(CHEN, around_seq=1) == []
    assert corpus.conversation(CHEN, around_seq=999) == []
    assert corpus.conversation("nobody") == []


def test_max_seq(corpus: SearchIndex) -> None:
    assert corpus.max_seq() == 40


# --- writing ----------------------------------------------------------------------------------


def test_empty_index(backend: str, make_index: Callable[[str], SearchIndex]) -> None:
    index = make_index(backend)
    assert index.max_seq() == 0
    result = index.search("NOT anything")
    assert (result.total, result.hits) == (0, [])
    assert result.facets == {"direction": {}, "channel": {}, "type": {}, "month": {}}
    index.index([])


def test_the_index_keeps_its_own_state(backend: str, make_index: Callable[[str], SearchIndex]) -> None:
    index = make_index(backend)
    assert index.state() is None  # a new index: not built
    index.index([doc(7, "2026-01-15T08:00:00Z", "first words")])
    assert index.state() is None  # documents alone state nothing
    index.mark(IndexState("a" * 32, 7))
    index.mark(IndexState("a" * 32, 9))
    assert index.state() == IndexState("a" * 32, 9)
    assert open_index(index.url).state() == IndexState("a" * 32, 9)  # another process sees it
    index.index([doc(10, "2026-02-15T08:00:00Z", "later words")])
    assert index.state() == IndexState("a" * 32, 9)  # writing documents keeps it
    assert index.rebuild([doc(3, "2026-01-15T08:00:00Z", "rebuilt")], IndexState("b" * 32, 12)) == 1
    assert index.state() == IndexState("b" * 32, 12) and index.max_seq() == 3
    index.reset()
    assert index.state() is None and index.max_seq() == 0  # wiped: not built again


def test_a_failed_rebuild_keeps_the_old_state(backend: str, make_index: Callable[[str], SearchIndex]) -> None:
    index = make_index(backend)
    index.rebuild([doc(1, "2026-01-15T08:00:00Z", "kept")], IndexState("a" * 32, 1))
    with pytest.raises(ValueError):
        index.rebuild([doc(2, "2026-01-15T08:00:00Z", "x"), {"seq": "bad"}], IndexState("b" * 32, 2))
    assert index.state() == IndexState("a" * 32, 1) and index.search("kept").total == 1


def test_reindexing_a_seq_replaces_it(backend: str, make_index: Callable[[str], SearchIndex]) -> None:
    index = make_index(backend)
    index.index([doc(7, "2026-01-15T08:00:00Z", "first words"), doc(8, "2026-01-16T08:00:00Z", "other")])
    index.index([doc(7, "2026-01-15T08:00:00Z", "second words")])
    assert seqs(index.search("words")) == [7]
    assert index.search("first").total == 0
    # Same seq, another month: the copy in the old month must go too.
    index.index([doc(7, "2026-05-01T00:00:00Z", "third words", revoked=True)])
    result = index.search("words")
    assert (seqs(result), result.facets["month"]) == ([7], {"2026-05": 1})
    assert result.hits[0].revoked
    # Twice in one batch: the last one wins.
    index.index([doc(9, "2026-01-01T00:00:00Z", "draft"), doc(9, "2026-01-01T00:00:00Z", "final")])
    assert (index.search("draft").total, seqs(index.search("final"))) == (0, [9])
    assert index.search("NOT nothingatall").total == 3


def test_lone_surrogates_are_stored_as_replacement_characters(backend: str,
                                                              make_index: Callable[[str], SearchIndex]) -> None:
    index = make_index(backend)
    index.index([doc(1, "2026-01-05T09:00:00Z", "broken \ud800 text hello", contact_name="A\udc00")])
    (hit,) = index.search("hello").hits
    assert hit.snippet == "broken \ufffd text <mark>hello</mark>" and hit.contact_name == "A\ufffd"


def test_a_15_mb_message_gets_a_correct_snippet_from_bounded_work(backend: str, make_index: Callable[[str], SearchIndex],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Once, the snippet analysed all of a 15 MB message character by character (9-11 s per search)."""
    from archiver.search import text

    filler = "Bonjour, the parcel left Zürich on Tuesday; 东京 next week, merci! "
    body = (filler * (15 * 2**20 // len(filler)))
    body = body[:654_321] + " kangaroo " + body[654_321:]
    index = make_index(backend)
    index.index([doc(1, "2026-01-05T09:00:00Z", body), doc(2, "2026-01-05T09:01:00Z", "a small kangaroo")])
    analysed: list[int] = []
    real = text.analyze
    monkeypatch.setattr(text, "analyze", lambda source: analysed.append(len(source)) or real(source))
    result = index.search("kangaroo", sort="oldest")
    assert seqs(result) == [1, 2]
    big, small = result.hits
    assert "<mark>kangaroo</mark>" in big.snippet and big.snippet.startswith("…") and len(big.snippet) < 300
    assert small.snippet == "a small <mark>kangaroo</mark>"
    assert sum(analysed) <= 2 * text.MAX_ANALYSED


def test_bad_documents_are_refused(backend: str, make_index: Callable[[str], SearchIndex]) -> None:
    index = make_index(backend)
    for bad in ({"text": "no seq", "time": 1}, {"seq": 1, "text": "no time"}, {"seq": "1", "time": 1},
                {"seq": True, "time": 1}, {"seq": 1, "time": 1, "kind": 5}):
        with pytest.raises(ValueError):
            index.index([bad])
    assert index.max_seq() == 0


def test_update_changes_only_the_named_fields(backend: str, make_index: Callable[[str], SearchIndex]) -> None:
    index = make_index(backend)
    index.index(CORPUS[:5] + [CORPUS[17]])  # January, and one December document
    before = {d["seq"]: d for d in index.conversation(ALICE)}
    index.update([{"seq": 2, "status": "read"}, {"seq": 1, "revoked": True, "revoked_by": 16},
                  {"seq": 1, "edited_by": 15}, {"seq": 18, "status": "failed"}, {"seq": 999, "status": "read"}])
    after = {d["seq"]: d for d in index.conversation(ALICE)}
    assert after[1] == {**before[1], "revoked": True, "revoked_by": 16, "edited_by": 15}
    assert after[2] == {**before[2], "status": "read"}
    assert after[18] == {**before[18], "status": "failed"}
    assert after[3] == before[3]
    # The text stays searchable, the facets and totals do not move, no document appears.
    assert seqs(index.search('"order the blue widget"')) == [1]
    assert seqs(index.search("invoice")) == [2, 18]
    assert index.search("NOT zzz").total == 6 and index.max_seq() == 18
    (hit,) = index.search("photo").hits
    assert (hit.status, hit.revoked_by, hit.edited_by) == ("delivered", None, None)
    (hit,) = index.search("blue widget kind:message").hits
    assert (hit.revoked, hit.revoked_by, hit.edited_by) == (True, 16, 15)
    # Patches of one seq apply in order; None clears a link.
    index.update([{"seq": 2, "status": "played"}, {"seq": 2, "status": "sent"}, {"seq": 1, "edited_by": None}])
    after = {d["seq"]: d for d in index.conversation(ALICE)}
    assert (after[2]["status"], after[1]["edited_by"], after[1]["revoked_by"]) == ("sent", None, 16)
    index.update([])


@pytest.mark.parametrize("patch", [{"status": "read"}, {"seq": "1", "status": "read"}, {"seq": 1, "text": "new"},
                                   {"seq": 1, "time": 5}, {"seq": 1, "revoked": None}, {"seq": 1, "edited_by": "3"},
                                   {"seq": 1, "status": 3}])
def test_bad_patches_are_refused(backend: str, make_index: Callable[[str], SearchIndex], patch: dict[str, Any]) -> None:
    index = make_index(backend)
    index.index(CORPUS[:1])
    with pytest.raises(ValueError):
        index.update([{"seq": 1, "status": "read"}, patch])
    assert index.conversation(ALICE)[0]["status"] == "delivered"


def test_delete(backend: str, make_index: Callable[[str], SearchIndex]) -> None:
    index = make_index(backend)
    index.index(CORPUS[:5])
    index.delete([2, 4, 999])
    assert sorted(seqs(index.search("NOT zzz"))) == [1, 3, 5]
    assert index.max_seq() == 5


def test_rebuild_replaces_everything(backend: str, make_index: Callable[[str], SearchIndex]) -> None:
    index = make_index(backend)
    index.index(CORPUS[:10])
    count = index.rebuild(d for d in CORPUS[30:])
    assert count == 10
    assert sorted(seqs(everything(index, "NOT zzz"))) == list(range(31, 41))
    assert index.max_seq() == 40
    index.index([CORPUS[0]])  # the indexer carries on after a rebuild
    assert seqs(index.search("blue")) == [1]


def test_searches_see_the_old_index_while_rebuilding(backend: str, make_index: Callable[[str], SearchIndex]) -> None:
    index = make_index(backend)
    index.index(CORPUS[:5])
    seen: list[int] = []

    def stream() -> Iterator[dict[str, Any]]:
        for d in CORPUS[20:]:
            yield d
            seen.append(index.search("NOT zzz").total)

    index.rebuild(stream())
    assert set(seen) == {5}
    assert index.search("NOT zzz").total == 20


def test_failed_rebuild_keeps_the_old_index(backend: str, make_index: Callable[[str], SearchIndex]) -> None:
    index = make_index(backend)
    index.index(CORPUS[:5])
    with pytest.raises(ValueError):
        index.rebuild([CORPUS[10], {"seq": 99, "text": "no time"}])
    assert sorted(seqs(index.search("NOT zzz"))) == [1, 2, 3, 4, 5]
    index.index([CORPUS[5]])
    assert index.max_seq() == 6


def test_reset(backend: str, make_index: Callable[[str], SearchIndex]) -> None:
    index = make_index(backend)
    index.index(CORPUS[:5])
    index.reset()
    assert (index.max_seq(), index.search("NOT zzz").total) == (0, 0)
    index.index(CORPUS[5:6])
    assert index.max_seq() == 6


# --- both backends on generated queries -------------------------------------------------------

_VOCAB = ["hello", "invoice", "order", "blue", "widget", "resume", "Résumé", "東京", "明天", "🎉", "مرحبا",
          "straße", "tres", "e-mail", "don't", "needleinhaystack", "shipped", "february", "tie", "same"]
_LEAF = st.one_of(
    st.sampled_from(_VOCAB).map(ql.Word),
    st.sampled_from(["inv", "res", "wid", "東", "hel", "or", "fe", "sa"]).map(ql.Prefix),
    st.lists(st.sampled_from(_VOCAB), min_size=1, max_size=2).map(lambda w: ql.Phrase(" ".join(w))),
    st.sampled_from([ALICE, BRUNO, CHEN, DANA, LINE1]).flatmap(
        lambda v: st.sampled_from(["from", "to", "contact", "number"]).map(lambda f: ql.Field(f, v))),
    st.sampled_from(["in", "out"]).map(lambda v: ql.Field("direction", v)),
    st.sampled_from(["customer", "app", "api", "history"]).map(lambda v: ql.Field("channel", v)),
    st.sampled_from(["message", "echo", "edit", "outbound"]).map(lambda v: ql.Field("kind", v)),
    st.sampled_from(["text", "image", "template"]).map(lambda v: ql.Field("type", v)),
    st.just(ql.Field("has_media", True)),
    st.sampled_from(["2026-01-10", "2026-01-31T23:59:59Z", "2026-02-01", "2026-03-05T10:00:00Z"]).flatmap(
        lambda d: st.sampled_from([ql.After, ql.Before]).map(lambda kind: kind(ql.parse_time(d, 0)))),
)
_TREES = st.recursive(_LEAF, lambda inner: st.one_of(
    st.lists(inner, min_size=2, max_size=3).map(ql.conjoin),
    st.lists(inner, min_size=2, max_size=3).map(ql.disjoin),
    inner.map(ql.Not),
), max_leaves=6)


@pytest.mark.opensearch
@settings(max_examples=50)
@given(tree=_TREES, sort=st.sampled_from(["newest", "oldest"]))
def test_backends_agree_on_generated_queries(fts5_corpus: SearchIndex, opensearch_corpus: SearchIndex,
                                             tree: ql.Node, sort: str) -> None:
    query = ql.to_text(tree)
    assume(query.count("NOT") + query.count("(") <= ql.MAX_DEPTH)  # within the parser's limit
    a, b = everything(fts5_corpus, query, sort), everything(opensearch_corpus, query, sort)
    assert (seqs(a), a.total, a.facets) == (seqs(b), b.total, b.facets), query


# --- choosing and reaching a backend ------------------------------------------------------------


@pytest.mark.parametrize("url", ["redis://localhost/0", "sqlite://", "sqlite:///", "http:///alias",
                                 "http://localhost:9200/Upper", "http://localhost:9200/a?timeout=soon"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_index(url)


def test_missing_opensearch_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "archiver.search.opensearch", raising=False)
    monkeypatch.setitem(sys.modules, "opensearchpy", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"whatsapp-archiver\[opensearch\]"):
        open_index("http://localhost:9200/messages")


def test_unreachable_opensearch_is_search_unavailable() -> None:
    # A real refused connection (nothing listens on port 9), no mock. How fast each call
    # fails is measured by scripts/bench (fail-fast table), not here.
    index = open_index("http://127.0.0.1:9/archiver-unreachable")
    for call in (index.ping, lambda: index.search("x"), lambda: index.index([CORPUS[0]]),
                 index.max_seq, lambda: index.conversation(ALICE), lambda: index.delete([1]),
                 lambda: index.update([{"seq": 1, "status": "read"}]), lambda: index.rebuild([CORPUS[0]])):
        with pytest.raises(SearchUnavailable) as info:
            call()
        assert "opensearchpy" not in type(info.value).__module__


@pytest.mark.opensearch
def test_opensearch_month_that_cannot_answer_fails_the_search(make_index: Callable[[str], Any]) -> None:
    # Partial results would silently hide messages from an officer: the whole search must fail.
    index = make_index("opensearch")
    index.index([CORPUS[0], CORPUS[29]])  # January and February
    index.client.indices.close(index=f"{index.alias}-g0-2026-01")
    with pytest.raises(SearchUnavailable):
        index.search("february")
    with pytest.raises(SearchUnavailable):
        index.max_seq()


@pytest.mark.opensearch
def test_opensearch_indices_from_before_new_fields_get_them(make_index: Callable[[str], Any]) -> None:
    from archiver.search.opensearch import MAPPINGS

    index = make_index("opensearch")
    old = {**MAPPINGS, "properties": {k: v for k, v in MAPPINGS["properties"].items()
                                      if k not in ("revoked_by", "edited_by")}}
    index.client.indices.create(index=f"{index.alias}-g0-2026-01",
                                body={"mappings": old, "aliases": {index.alias: {}}})
    index.index([{**CORPUS[0], "revoked_by": 16}])
    index.update([{"seq": 1, "edited_by": 15}])
    (hit,) = index.search("blue").hits
    assert (hit.revoked_by, hit.edited_by) == (16, 15)


def test_fts5_file_from_before_new_fields_gets_them(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the schema before revoked_by/edited_by
        db.execute("""CREATE TABLE docs (seq INTEGER PRIMARY KEY, wamid TEXT, kind TEXT, type TEXT,
            direction TEXT, channel TEXT, time INTEGER NOT NULL, from_id TEXT, to_id TEXT, contact TEXT,
            contact_name TEXT, number TEXT, text TEXT NOT NULL, has_media INTEGER NOT NULL, mime_type TEXT,
            status TEXT, edit_of INTEGER, revoked INTEGER NOT NULL, retention_class TEXT)""")
    db.close()
    index = open_index(f"sqlite:///{path}")
    index.index([{**CORPUS[0], "revoked_by": 16}])
    index.update([{"seq": 1, "edited_by": 15}])
    (hit,) = index.search("blue").hits
    assert (hit.revoked_by, hit.edited_by) == (16, 15)


def test_embedded_backend_does_not_import_opensearch(tmp_path: Path) -> None:
    import subprocess

    code = (f"from archiver.search import open_index; import sys; "
            f"open_index('sqlite:///{tmp_path}/s.db').search('x'); "
            f"assert 'opensearchpy' not in sys.modules")
    # A fresh interpreter: this one has imported opensearchpy already.
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])  # noqa: S603
