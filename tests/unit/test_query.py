"""The query language (parse, errors with positions, precedence, round-trips) and text folding."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from archiver.errors import QuerySyntaxError
from archiver.search import query as ql
from archiver.search import text
from archiver.search.query import (
    After,
    And,
    Before,
    Field,
    Not,
    Or,
    Phrase,
    Prefix,
    Word,
    parse,
    to_text,
)

JAN_1 = 1767225600  # 2026-01-01T00:00:00Z


# --- leaves --------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "tree"), [
    ("invoice", Word("invoice")),
    ("inv*", Prefix("inv")),
    ('"blue widget"', Phrase("blue widget")),
    ('"the blue wid"*', Prefix("the blue wid")),
    ('"AND"*', Prefix("AND")),
    ("e-mail", Word("e-mail")),
    ("from:15550001", Field("from", "15550001")),
    ("from:+15550001", Field("from", "15550001")),
    ("to:+15550001", Field("to", "15550001")),
    ("contact:US.1349120865", Field("contact", "US.1349120865")),
    ("number:+15559990000", Field("number", "15559990000")),
    ("direction:in", Field("direction", "in")),
    ("direction:OUT", Field("direction", "out")),
    ("channel:history", Field("channel", "history")),
    ("kind:history_message", Field("kind", "history_message")),
    ("type:image", Field("type", "image")),
    ("wamid:wamid.HBgL123", Field("wamid", "wamid.HBgL123")),
    ("has:media", Field("has_media", True)),
    ("HAS:Media", Field("has_media", True)),
    ("after:2026-01-01", After(JAN_1)),
    ("before:2026-01-01T10:00:00Z", Before(JAN_1 + 36000)),
    ("10:30", Word("10:30")),
    ("and", Word("and")),
    ('contact:"+44 7946 0001234"', Field("contact", "4479460001234")),
    ('kind:"echo"', Field("kind", "echo")),
    ('type:"image"', Field("type", "image")),
    ('wamid:"wamid.A B"', Field("wamid", "wamid.A B")),
])
def test_leaves(query: str, tree: ql.Node) -> None:
    assert parse(query) == tree


@pytest.mark.parametrize(("query", "same_as"), [
    ("zebrafjord -refund", "zebrafjord NOT refund"),
    ('-"a phrase" x', 'NOT "a phrase" x'),
    ("-(a OR b) c", "NOT (a OR b) c"),
    ("a -has:media", "a NOT has:media"),
    ("a OR -b", "a OR NOT b"),
    ("e-mail -e-mail", "e-mail NOT e-mail"),
])
def test_a_leading_minus_is_not(query: str, same_as: str) -> None:
    assert parse(query) == parse(same_as)


# --- precedence ------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "tree"), [
    ("a b", And((Word("a"), Word("b")))),
    ("a AND b", And((Word("a"), Word("b")))),
    ("a b OR c", Or((And((Word("a"), Word("b"))), Word("c")))),
    ("a OR b c", Or((Word("a"), And((Word("b"), Word("c")))))),
    ("a OR b AND c", Or((Word("a"), And((Word("b"), Word("c")))))),
    ("NOT a b", And((Not(Word("a")), Word("b")))),
    ("NOT a OR b", Or((Not(Word("a")), Word("b")))),
    ("NOT (a OR b)", Not(Or((Word("a"), Word("b"))))),
    ("NOT NOT a", Not(Not(Word("a")))),
    ("(a OR b) c", And((Or((Word("a"), Word("b"))), Word("c")))),
    ("a (b c) d", And((Word("a"), Word("b"), Word("c"), Word("d")))),
    ("a OR (b OR c)", Or((Word("a"), Word("b"), Word("c")))),
    ("((a))", Word("a")),
    ("from:1 NOT direction:out", And((Field("from", "1"), Not(Field("direction", "out"))))),
    ("a and b or c", And((Word("a"), Word("and"), Word("b"), Word("or"), Word("c")))),
    ('x"y z"', And((Word("x"), Phrase("y z")))),
])
def test_precedence(query: str, tree: ql.Node) -> None:
    assert parse(query) == tree


def test_nesting_and_size_up_to_the_limits_parse() -> None:
    assert parse("(" * ql.MAX_DEPTH + "a" + ")" * ql.MAX_DEPTH) == Word("a")
    assert parse("NOT " * ql.MAX_DEPTH + "a") is not None
    assert isinstance(parse(" ".join(f"w{i}" for i in range(ql.MAX_LEAVES))), And)


def test_only_filters_is_a_query() -> None:
    assert parse("has:media direction:in") == And((Field("has_media", True), Field("direction", "in")))


def test_pure_negation_is_a_query() -> None:
    assert parse("NOT invoice") == Not(Word("invoice"))


# --- errors and their positions ----------------------------------------------------------


@pytest.mark.parametrize(("query", "position", "words"), [
    ("", 0, "empty"),
    ("   ", 0, "empty"),
    ('"abc', 0, "quote"),
    ('x "abc', 2, "quote"),
    ("(a", 0, "unclosed"),
    ("a (b OR c", 2, "unclosed"),
    ("a)", 1, "unmatched"),
    ("(a))", 3, "unmatched"),
    ("()", 0, "empty parentheses"),
    ("a AND", 2, "AND needs something after"),
    ("a OR", 2, "OR needs something after"),
    ("AND a", 0, "AND needs something before"),
    ("OR a", 0, "OR needs something before"),
    ("a OR OR b", 2, "OR needs something after"),
    ("a AND OR b", 2, "AND needs something after"),
    ("NOT", 0, "NOT needs something after"),
    ("a NOT", 2, "NOT needs something after"),
    ("(a OR)", 3, "OR needs something after"),
    ("subject:x", 0, "unknown filter"),
    ("x http://example.com", 2, "unknown filter"),
    ("from:", 5, "needs a value"),
    ("from:+", 5, "needs a value"),
    ("after:2026-13-01", 6, "bad date"),
    ("after:2026-02-30", 6, "bad date"),
    ("before:yesterday", 7, "bad date"),
    ("after:2026-01-01T10:00:00", 6, "bad date"),
    ("x after:2026-01-01T25:00:00Z", 8, "bad date"),
    ("direction:sideways", 10, "direction"),
    ("channel:sms", 8, "channel"),
    ('kind:"x"', 5, "kind: must be one of message, echo"),
    ("kind:x", 5, "kind: must be one of message, echo"),
    ('kind:"x', 5, "unclosed quote"),
    ('contact:""', 8, "needs a value"),
    ("a -", 2, "nothing searchable"),
    ("a -)", 2, "nothing searchable"),
    ("has:attachment", 4, "media"),
    ("?!", 0, "nothing searchable"),
    ('a ""', 2, "nothing searchable"),
    ("*", 0, "nothing searchable"),
    ("(" * 17 + "a" + ")" * 17, 16, "nested too deeply"),
    ("NOT " * 17 + "a", 64, "nested too deeply"),
    ("(" * 5000 + "a" + ")" * 5000, 16, "nested too deeply"),
    (" ".join(f"w{i}" for i in range(65)), 246, "too many"),
])
def test_errors_carry_position(query: str, position: int, words: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse(query)
    assert info.value.position == position
    assert words in str(info.value)
    assert info.value.as_dict()["position"] == str(position)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    "a b OR c", "NOT (a OR b) c", '"blue widget" OR inv*', "from:1555 NOT has:media",
    "(a OR b) (c OR NOT d)", "after:2026-01-01 before:2026-02-01T10:30:00Z", "NOT NOT x",
    "東京 OR مرحبا OR 🎉",
])
def test_round_trip_examples(query: str) -> None:
    tree = parse(query)
    assert parse(to_text(tree)) == tree


_WORDS = st.sampled_from(["resume", "Résumé", "東京", "مرحبا", "🎉", "e-mail", "don't", "x1", "and", "10:30", "straße"])
_LEAVES = st.one_of(
    _WORDS.map(Word),
    st.sampled_from(["res", "東", "e-ma", "inv", "the blue wid", "AND", "kind:x", "foo*"]).map(Prefix),
    st.lists(_WORDS, min_size=1, max_size=3).map(lambda ws: Phrase(" ".join(ws))),
    st.sampled_from(["from", "to", "contact", "number"]).flatmap(
        lambda name: st.from_regex(r"[0-9]{3,8}", fullmatch=True).map(lambda v: Field(name, v))),
    st.sampled_from(["in", "out"]).map(lambda v: Field("direction", v)),
    st.sampled_from(["customer", "app", "api", "history"]).map(lambda v: Field("channel", v)),
    st.sampled_from(["message", "echo", "edit"]).map(lambda v: Field("kind", v)),
    st.just(Field("has_media", True)),
    st.integers(0, 4_000_000_000).map(After),
    st.integers(0, 4_000_000_000).map(Before),
)
TREES = st.recursive(_LEAVES, lambda inner: st.one_of(
    st.lists(inner, min_size=2, max_size=3).map(ql.conjoin),
    st.lists(inner, min_size=2, max_size=3).map(ql.disjoin),
    inner.map(Not),
), max_leaves=8)


def nesting(node: ql.Node) -> int:
    """Levels of And/Or/Not; each adds at most one NOT or one pair of parentheses."""
    if isinstance(node, Not):
        return 1 + nesting(node.item)
    if isinstance(node, (And, Or)):
        return 1 + max(nesting(item) for item in node.items)
    return 0


@settings(max_examples=200)
@given(TREES)
def test_round_trip_generated(tree: ql.Node) -> None:
    assume(nesting(tree) <= ql.MAX_DEPTH)
    assert parse(to_text(tree)) == tree


# --- what gets highlighted ------------------------------------------------------------------


def test_highlights_skip_negated_text() -> None:
    tree = parse('inv* "Blue widget" NOT red NOT NOT green from:1')
    assert ql.highlights(tree) == [(("inv",), True), (("blue", "widget"), False), (("green",), False)]


# --- folding: the same for documents and queries ------------------------------------------


@pytest.mark.parametrize(("raw", "terms"), [
    ("Résumé RESUME resume", ["resume", "resume", "resume"]),
    ("Straße ΣΊΣΥΦΟΣ İstanbul", ["strasse", "σισυφοσ", "istanbul"]),
    ("ﬁle №5 ①", ["file", "no5", "1"]),
    ("東京都に", ["東", "京", "都", "に"]),
    ("서울에서", ["서", "울", "에", "서"]),
    ("ｶﾞｽ ガス", ["ガ", "ス", "ガ", "ス"]),
    ("مَرْحَبًا أحمد", ["مرحبا", "احمد"]),
    ("می\u200cخواهم", ["میخواهم"]),
    ("party🎉👍🏽!", ["party", "🎉", "👍"]),
    ("don't e-mail", ["don", "t", "e", "mail"]),
    ("?! -- ...", []),
])
def test_folding(raw: str, terms: list[str]) -> None:
    assert text.terms(raw) == terms


def test_long_words_are_cut_below_lucene_limit() -> None:
    assert [len(t) for t in text.terms("x" * 250)] == [text.MAX_TERM, text.MAX_TERM, 50]


def _slow_terms(raw: str) -> list[str]:
    return [t.term for t in text.analyze(raw)]


@pytest.mark.parametrize("raw", ["plain ASCII, 42 words!", "x" * 250 + " é" * 120, "ｶﾞｷﾞ and ｶ ﾞ", "\u3099alone",
                                 "a\u200db\u0640c ﾞ", "tab\tnew\nline\x1cfs\xa0nbsp", "ǅ ẞ İ ﬁ ¼"])
def test_terms_shortcuts_give_what_analyze_gives(raw: str) -> None:
    assert text.terms(raw) == _slow_terms(raw)


@settings(max_examples=300)
@given(st.text(max_size=60) | st.text(st.sampled_from("aé ｶﾞ東京🎉\u3099\u200d-ß"), max_size=30))
def test_terms_shortcuts_agree_with_analyze_on_any_text(raw: str) -> None:
    assert text.terms(raw) == _slow_terms(raw)


def test_decomposed_input_folds_like_composed() -> None:
    assert text.terms("re\u0301sume\u0301") == text.terms("résumé") == ["resume"]


def test_snippet_escapes_and_marks_original_text() -> None:
    out = text.snippet("<b>Résumé</b> & more", [(("resume",), False)])
    assert out == "&lt;b&gt;<mark>Résumé</mark>&lt;/b&gt; &amp; more"


def test_snippet_marks_phrases_as_one_span_and_windows_long_text() -> None:
    body = "a " * 1000 + "don't stop" + " b" * 1000
    out = text.snippet(body, [(("don", "t"), False)], width=60)
    assert "<mark>don&#x27;t</mark> stop" in out
    assert out.startswith("…") and out.endswith("…") and len(out) < 120
