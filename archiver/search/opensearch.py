"""``http(s)://host:port[/alias]``: the scale-out search index on OpenSearch (opensearch-py).

Layout: one index per month of ``time`` (UTC), named ``<alias>-<generation>-YYYY-MM``,
plus an empty ``<alias>-<generation>-base`` so the alias exists before the first
document. The base index's mapping ``_meta`` holds the generation's IndexState, so a
rebuild's state arrives with its documents (one alias swap) and a wiped cluster has
none. Searches go through the alias, so old months can be frozen or moved without the
application noticing. A rebuild writes a new generation next to the live one and
swaps the alias in one atomic ``_aliases`` call (guideline 19).

Only what the server core offers is used, because the integration-test distribution
carries no modules (no analysis-common, painless or reindex): a composable index template
with strict mappings, the built-in ``whitespace`` analyzer over terms folded by text.py,
bool/term/range/prefix/match_phrase/span queries, terms/date_histogram/max aggregations,
bulk writes and deletes by id, and alias actions.

Every opensearch-py failure leaves as SearchUnavailable. The client has short timeouts
and one retry, and keeps no state that outlives an outage: a later call simply retries.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, OpenSearchException, RequestError

from archiver.errors import ConfigError, SearchUnavailable
from archiver.search import (
    Hit,
    IndexState,
    SearchResult,
    check_page,
    check_size,
    empty_facets,
    merge_patches,
    month,
    normalize,
    text,
    unique,
)
from archiver.search import query as ql

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "archiver-messages"
FIRST_GENERATION = "g0"  # fixed, so two processes starting on an empty cluster agree
_ALIAS = re.compile(r"[a-z0-9][a-z0-9_.-]{0,200}")
_BATCH = 500  # ids per lookup
_BULK_DOCS = 2000  # documents per bulk request (a few MB): fewer round trips, same memory bound
_BULK_TIMEOUT = 30  # seconds; searches keep the short default so they fail fast
_STATE = "archiver_state"  # key of the IndexState in the base index's mapping _meta

_KEYWORD = {"type": "keyword"}
MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    # Folded terms are only for matching; snippets come from the original text.
    "_source": {"excludes": ["folded"]},
    "properties": {
        "seq": {"type": "long"}, "wamid": _KEYWORD, "kind": _KEYWORD, "type": _KEYWORD,
        "direction": _KEYWORD, "channel": _KEYWORD,
        "time": {"type": "date", "format": "epoch_second"},
        "from": _KEYWORD, "to": _KEYWORD, "contact": _KEYWORD, "number": _KEYWORD,
        "contact_name": {"type": "keyword", "index": False, "doc_values": False},
        "text": {"type": "text", "index": False},
        "folded": {"type": "text", "analyzer": "whitespace", "norms": False, "index_options": "positions"},
        "has_media": {"type": "boolean"}, "revoked": {"type": "boolean"},
        "mime_type": _KEYWORD, "status": _KEYWORD, "edit_of": {"type": "long"},
        "revoked_by": {"type": "long"}, "edited_by": {"type": "long"},
        "retention_class": _KEYWORD,
    },
}
_AGGS = {
    **{name: {"terms": {"field": name, "size": 200}} for name in ("direction", "channel", "type")},
    "month": {"date_histogram": {"field": "time", "calendar_interval": "month", "format": "yyyy-MM",
                                 "min_doc_count": 1, "time_zone": "UTC"}},
}
_ORDER = {"newest": "desc", "oldest": "asc"}

P = ParamSpec("P")
R = TypeVar("R")


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """Turn any opensearch-py failure of ``method`` into SearchUnavailable."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except OpenSearchException as exc:
            # status and error type only: OpenSearch reasons can quote document values.
            status, error = getattr(exc, "status_code", ""), getattr(exc, "error", "")
            detail = error if status == "N/A" else f"{status} {error}"
            raise SearchUnavailable(f"OpenSearch failed: {type(exc).__name__} {detail}".strip()) from exc

    return wrapper


class OpenSearchIndex:
    """The OpenSearch driver of :class:`archiver.search.SearchIndex`."""

    def __init__(self, client: OpenSearch, alias: str, url: str, shards: int = 1, replicas: int = 0) -> None:
        self.client = client
        self.alias = alias
        self.url = url
        self.shards = shards
        self.replicas = replicas
        self._ready = False
        self._known: set[str] = set()  # indices this process has seen exist

    def __repr__(self) -> str:
        return f"OpenSearchIndex(url={self.url!r})"

    @classmethod
    def from_url(cls, url: str) -> OpenSearchIndex:
        """Build the client for ``http(s)://[user:pass@]host:port[/alias][?options]``.

        Options: ``timeout`` (seconds, default 5), ``shards`` (1), ``replicas`` (0: a single node
        stays green; set 1 or more on a cluster of that many more nodes),
        ``verify_certs`` (true), ``ca_certs`` (path). No request is sent.
        Raises ConfigError for a bad URL or option.
        """
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query))
        alias = parts.path.strip("/") or DEFAULT_ALIAS
        if not parts.hostname or not _ALIAS.fullmatch(alias):
            raise ConfigError(f"search URL needs http(s)://host:port[/alias] with a lower-case alias, got {alias!r}")
        try:
            port, timeout = parts.port or 9200, float(options.get("timeout", 5))
            shards, replicas = int(options.get("shards", 1)), int(options.get("replicas", 0))
        except ValueError as exc:
            raise ConfigError(f"bad option in the search URL: {exc}") from exc
        client = OpenSearch(
            hosts=[{"host": parts.hostname, "port": port}],
            http_auth=(unquote(parts.username), unquote(parts.password or "")) if parts.username else None,
            use_ssl=parts.scheme == "https",
            verify_certs=options.get("verify_certs", "true").lower() != "false",
            ca_certs=options.get("ca_certs"),
            timeout=timeout, max_retries=1, retry_on_timeout=False,
        )
        public = f"{parts.scheme}://{parts.hostname}:{port}/{alias}"  # never the password
        return cls(client, alias, public, shards, replicas)

    # --- layout ----------------------------------------------------------------------

    def _name(self, generation: str, suffix: str) -> str:
        return f"{self.alias}-{generation}-{suffix}"

    def _template(self) -> dict[str, Any]:
        """The composable index template every index of this alias is created from."""
        settings = {"number_of_shards": self.shards, "number_of_replicas": self.replicas}
        return {
            "index_patterns": [f"{self.alias}-g*"],
            "priority": 100,
            "template": {"settings": {"index": settings}, "mappings": MAPPINGS},
            "_meta": {"managed_by": "whatsapp-archiver"},
        }

    def _ensure_ready(self) -> None:
        """Put the template and, on an empty cluster, the first generation (once per process)."""
        if self._ready:
            return
        self.client.indices.put_index_template(name=f"{self.alias}-template", body=self._template())
        if not self._generations():
            self._create(self._name(FIRST_GENERATION, "base"), live=True)
        else:
            # Indices created before a field was added get it now (adding fields is allowed).
            self.client.indices.put_mapping(index=f"{self.alias}-g*", body={"properties": MAPPINGS["properties"]})
        self._ready = True

    def _members(self) -> list[str]:
        """The indices the alias points to; none before the first use."""
        try:
            return sorted(self.client.indices.get_alias(name=self.alias))
        except NotFoundError:
            return []

    def _generations(self) -> set[str]:
        """The generations the alias points to (one, except mid-swap by hand)."""
        return {name[len(self.alias) + 1:].split("-", 1)[0] for name in self._members()}

    def _live(self) -> str:
        """The live generation, read again on every write so a rebuild elsewhere is seen."""
        self._ensure_ready()
        generations = self._generations() or {FIRST_GENERATION}
        return max(generations, key=lambda g: int(g[1:]))

    def _create(self, name: str, *, live: bool, bulk: bool = False) -> None:
        """Create index ``name`` from the template, joining the alias if ``live``."""
        if name in self._known:
            return
        body: dict[str, Any] = {"aliases": {self.alias: {}}} if live else {}
        if bulk:  # a rebuild refreshes once at the end
            body["settings"] = {"index": {"refresh_interval": "-1"}}
        try:
            self.client.indices.create(index=name, body=body)
        except RequestError as exc:
            if exc.error != "resource_already_exists_exception":
                raise
        self._known.add(name)

    # --- writing ---------------------------------------------------------------------

    @_translated
    def index(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Add or replace ``docs`` by seq; searchable on return. Raises ValueError, SearchUnavailable."""
        rows = unique(docs)
        if not rows:
            return
        generation = self._live()
        targets = {row["seq"]: self._name(generation, month(row["time"])) for row in rows}
        for name in set(targets.values()):
            self._create(name, live=True)
        # A seq whose time changed lives in another month's index: remove that copy.
        stale = [(index, seq) for index, seq in self._locate(generation, list(targets)) if targets[seq] != index]
        actions = _delete_actions(stale) + _index_actions(rows, targets)
        self._bulk(actions)
        self.client.indices.refresh(index=",".join(sorted({*targets.values(), *(i for i, _ in stale)})))

    @_translated
    def update(self, patches: Sequence[Mapping[str, Any]]) -> None:
        """Change fields of indexed documents (the text stays). Raises ValueError, SearchUnavailable."""
        merged = {seq: changes for seq, changes in merge_patches(patches).items() if changes}
        if not merged:
            return
        # A partial update would rebuild the document from _source, which leaves out the
        # folded terms: fetch the stored fields, change them and index the whole document.
        found = self._fetch(self._live(), list(merged))
        if not found:
            return
        rows = [normalize({**source, **merged[seq]}) for _, seq, source in found]
        targets = {seq: index for index, seq, _ in found}
        self._bulk(_index_actions(rows, targets))
        self.client.indices.refresh(index=",".join(sorted(set(targets.values()))))

    @_translated
    def delete(self, seqs: Sequence[int]) -> None:
        """Remove documents by seq. Raises SearchUnavailable."""
        generation = self._live()
        found = self._locate(generation, list(seqs))
        if found:
            self._bulk(_delete_actions(found))
            self.client.indices.refresh(index=",".join(sorted({index for index, _ in found})))

    def _locate(self, generation: str, seqs: list[int]) -> list[tuple[str, int]]:
        """``(index, seq)`` of each of ``seqs`` stored in ``generation``."""
        return [(index, seq) for index, seq, _ in self._fetch(generation, seqs, source=False)]

    def _fetch(self, generation: str, seqs: list[int], *, source: bool = True) -> list[tuple[str, int, dict[str, Any]]]:
        """``(index, seq, stored fields)`` of each of ``seqs`` stored in ``generation``."""
        found = []
        for i in range(0, len(seqs), _BATCH):
            chunk = seqs[i:i + _BATCH]
            body = {"query": {"ids": {"values": [str(s) for s in chunk]}}, "_source": source, "size": len(chunk)}
            resp = self._search(body, index=self._name(generation, "*"))
            found += [(hit["_index"], int(hit["_id"]), hit.get("_source", {})) for hit in resp["hits"]["hits"]]
        return found

    def _bulk(self, actions: list[dict[str, Any]]) -> None:
        """Send ``actions`` in chunks. Raises SearchUnavailable if OpenSearch refuses any."""
        for i in range(0, len(actions), 2 * _BULK_DOCS):
            resp = self.client.bulk(body=actions[i:i + 2 * _BULK_DOCS], request_timeout=_BULK_TIMEOUT)
            if resp["errors"]:
                failed = [item for entry in resp["items"] for item in entry.values() if item.get("error")]
                if failed:
                    kind = failed[0]["error"].get("type", "unknown")
                    raise SearchUnavailable(f"OpenSearch refused {len(failed)} bulk actions ({kind})")

    @_translated
    def state(self) -> IndexState | None:
        """The state recorded on the live generation, None if none. Raises SearchUnavailable."""
        if not self._members():  # new or wiped (maybe while this process ran): start over
            self._ready = False
            self._known.clear()
        base = self._name(self._live(), "base")
        try:
            mappings = self.client.indices.get_mapping(index=base)[base]["mappings"]
        except NotFoundError:
            return None
        found = (mappings.get("_meta") or {}).get(_STATE)
        if not isinstance(found, dict) or not isinstance(found.get("seq"), int) or not found.get("archive"):
            return None
        return IndexState(archive=str(found["archive"]), seq=found["seq"])

    @_translated
    def mark(self, state: IndexState) -> None:
        """Record ``state`` on the live generation. Raises SearchUnavailable."""
        self._mark(self._live(), state)

    def _mark(self, generation: str, state: IndexState) -> None:
        body = {"_meta": {_STATE: {"archive": state.archive, "seq": state.seq}}}
        self.client.indices.put_mapping(index=self._name(generation, "base"), body=body)

    @_translated
    def rebuild(self, docs: Iterable[Mapping[str, Any]], state: IndexState | None = None) -> int:
        """Write ``docs`` (and ``state``) into a new generation, then swap the alias to it atomically.

        Each seq must come once (WORM order guarantees it). The old generation keeps
        answering searches until the swap and is deleted after it. Raises ValueError,
        SearchUnavailable; on failure the new generation is dropped (or left for the
        next rebuild to remove if OpenSearch is down).
        """
        self._ensure_ready()
        generation = f"g{time.time_ns() // 1_000_000}"
        try:
            count = self._fill(generation, iter(docs))
            if state is not None:
                self._mark(generation, state)
        except BaseException:
            self._drop_quietly(self._name(generation, "*"))
            raise
        self._swap(generation)
        log.info("search.rebuilt", extra={"generation": generation, "documents": count})
        return count

    def _fill(self, generation: str, stream: Iterable[Mapping[str, Any]]) -> int:
        """Index ``stream`` into ``generation`` (not yet in the alias) and refresh it once."""
        self._create(self._name(generation, "base"), live=False, bulk=True)
        count = 0
        while rows := unique(islice(stream, _BULK_DOCS)):
            targets = {row["seq"]: self._name(generation, month(row["time"])) for row in rows}
            for name in set(targets.values()):
                self._create(name, live=False, bulk=True)
            self._bulk(_index_actions(rows, targets))
            count += len(rows)
        pattern = self._name(generation, "*")
        self.client.indices.put_settings(index=pattern, body={"index": {"refresh_interval": None}})
        self.client.indices.refresh(index=pattern)
        return count

    def _swap(self, generation: str) -> None:
        """Point the alias at ``generation`` only, in one atomic call; delete the rest."""
        new = self._indices(self._name(generation, "*"))
        actions: list[dict[str, Any]] = [{"remove": {"index": n, "alias": self.alias}} for n in self._members()]
        actions.append({"add": {"indices": new, "alias": self.alias}})
        self.client.indices.update_aliases(body={"actions": actions})
        # Old generations and leftovers of failed rebuilds: everything not in the new one.
        self._delete_indices([n for n in self._indices(f"{self.alias}-g*") if n not in new])

    def _indices(self, pattern: str) -> list[str]:
        """Names of the indices matching ``pattern``."""
        rows = self.client.cat.indices(index=pattern, h="index", format="json")
        return sorted(row["index"] for row in rows)

    def _delete_indices(self, names: list[str]) -> None:
        """Delete indices by name (no wildcards: clusters may require names)."""
        for i in range(0, len(names), 50):
            self.client.indices.delete(index=",".join(names[i:i + 50]))
        self._known.difference_update(names)

    def _drop_quietly(self, pattern: str) -> None:
        """Best-effort removal of a failed rebuild; the next rebuild removes what stays."""
        try:
            self._delete_indices(self._indices(pattern))
        except OpenSearchException:
            pass

    @_translated
    def reset(self) -> None:
        """Drop everything and start empty (an empty rebuild). Raises SearchUnavailable."""
        self.rebuild(())

    @_translated
    def drop(self) -> None:
        """Delete every index of this alias and the template (tests and decommissioning).

        Not part of SearchIndex. Raises SearchUnavailable.
        """
        self._delete_indices(self._indices(f"{self.alias}-g*"))
        self.client.indices.delete_index_template(name=f"{self.alias}-template", ignore=[404])
        self._ready = False

    # --- reading ---------------------------------------------------------------------

    @_translated
    def search(self, query: str, *, page: int = 1, size: int = 20, sort: str = "newest") -> SearchResult:
        """One page of ``query``. Raises QuerySyntaxError, ValueError, SearchUnavailable."""
        tree = ql.parse(query)
        check_page(page, size, sort)
        self._ensure_ready()
        body = {
            "query": {"bool": {"filter": [_compile(tree)]}},
            "sort": _sort(sort), "from": (page - 1) * size, "size": size,
            "track_total_hits": True, "aggs": _AGGS,
        }
        resp = self._search(body)
        patterns = ql.highlights(tree)
        docs = [normalize(hit["_source"]) for hit in resp["hits"]["hits"]]
        hits = [Hit.from_doc(doc, text.snippet(doc["text"], patterns)) for doc in docs]
        return SearchResult(total=resp["hits"]["total"]["value"], hits=hits,
                            facets=_facets(resp["aggregations"]), page=page, size=size)

    @_translated
    def conversation(self, contact: str, around_seq: int | None = None, size: int = 50,
                     aliases: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The contact's documents in time order, around ``around_seq`` or the latest.

        Raises ValueError, SearchUnavailable.
        """
        check_size(size)
        self._ensure_ready()
        mine = {"terms": {"contact": list(dict.fromkeys(c.removeprefix("+") for c in (contact, *aliases)))}}
        if around_seq is None:
            return list(reversed(self._window([mine], "newest", size)))
        anchor = self._window([mine, {"term": {"seq": around_seq}}], "newest", 1)
        if not anchor:
            return []
        at = anchor[0]["time"]
        earlier = {"bool": {"should": [{"range": {"time": {"lt": at}}}, {"bool": {"filter": [
            {"term": {"time": at}}, {"range": {"seq": {"lt": around_seq}}}]}}], "minimum_should_match": 1}}
        later = {"bool": {"must_not": [earlier]}}
        before = list(reversed(self._window([mine, earlier], "newest", size // 2)))
        return before + self._window([mine, later], "oldest", size - len(before))

    def _window(self, filters: list[dict[str, Any]], sort: str, size: int) -> list[dict[str, Any]]:
        """Up to ``size`` documents matching all ``filters``, in ``sort`` order."""
        if size <= 0:
            return []
        body = {"query": {"bool": {"filter": filters}}, "sort": _sort(sort), "size": size}
        resp = self._search(body)
        return [normalize(hit["_source"]) for hit in resp["hits"]["hits"]]

    def _search(self, body: dict[str, Any], index: str | None = None) -> dict[str, Any]:
        """Search ``index`` (the alias by default). Raises SearchUnavailable if any shard did not answer.

        OpenSearch answers 200 with partial results when some shards fail (a month
        being moved, a closed index); an archive search must not silently miss messages.
        """
        resp: dict[str, Any] = self.client.search(index=index or self.alias, body=body)
        shards = resp.get("_shards", {})
        if shards.get("failed") or resp.get("timed_out"):
            raise SearchUnavailable(f"OpenSearch answered from {shards.get('successful')} of "
                                    f"{shards.get('total')} shards; results would be incomplete")
        return resp

    @_translated
    def matching_seqs(self, query: str, *, after: int, through: int, limit: int = 1000) -> list[int]:
        """Matching seqs in ``(after, through]``, ascending. Raises QuerySyntaxError, SearchUnavailable."""
        tree = ql.parse(query)
        self._ensure_ready()
        body = {"query": {"bool": {"filter": [_compile(tree), {"range": {"seq": {"gt": after, "lte": through}}}]}},
                "sort": [{"seq": {"order": "asc"}}], "size": limit, "_source": False}
        return [int(hit["sort"][0]) for hit in self._search(body)["hits"]["hits"]]

    @_translated
    def max_seq(self) -> int:
        """Highest indexed seq, 0 when empty. Raises SearchUnavailable."""
        self._ensure_ready()
        body = {"size": 0, "aggs": {"top": {"max": {"field": "seq"}}}}
        value = self._search(body)["aggregations"]["top"]["value"]
        return int(value or 0)

    @_translated
    def ping(self) -> None:
        """One cheap request to the node. Raises SearchUnavailable."""
        self.client.info()


# --- building requests -------------------------------------------------------------------


def _index_actions(rows: list[dict[str, Any]], targets: Mapping[int, str]) -> list[dict[str, Any]]:
    """Bulk ``index`` lines (id = seq, so a re-index replaces) with the folded terms added."""
    actions: list[dict[str, Any]] = []
    for row in rows:
        actions += [{"index": {"_index": targets[row["seq"]], "_id": str(row["seq"])}},
                    {**row, "folded": text.folded(row["text"])}]
    return actions


def _delete_actions(found: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
    """Bulk ``delete`` lines for ``(index, seq)`` pairs."""
    return [{"delete": {"_index": index, "_id": str(seq)}} for index, seq in found]


def _sort(sort: str) -> list[dict[str, Any]]:
    """Time, then seq as the tie-break, both in the order ``sort`` names."""
    return [{"time": {"order": _ORDER[sort]}}, {"seq": {"order": _ORDER[sort]}}]


def _facets(aggs: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Counts by direction, channel, type and month from the aggregation response."""
    facets = empty_facets()
    for name in facets:
        key = "key_as_string" if name == "month" else "key"
        facets[name] = dict(sorted((b[key], b["doc_count"]) for b in aggs[name]["buckets"]))
    return facets


def _compile(node: ql.Node) -> dict[str, Any]:
    """The OpenSearch query (filter context, no scoring) that matches exactly what ``node`` does."""
    if isinstance(node, (ql.Word, ql.Phrase, ql.Prefix)):
        return _text_query(node.terms, isinstance(node, ql.Prefix))
    if isinstance(node, ql.Field):
        return {"term": {node.name: node.value}}
    if isinstance(node, ql.After):
        return {"range": {"time": {"gte": node.epoch}}}
    if isinstance(node, ql.Before):
        return {"range": {"time": {"lt": node.epoch}}}
    if isinstance(node, ql.And):
        positive = [_compile(i) for i in node.items if not isinstance(i, ql.Not)]
        negative = [_compile(i.item) for i in node.items if isinstance(i, ql.Not)]
        return {"bool": {"filter": positive, "must_not": negative}}
    if isinstance(node, ql.Or):
        return {"bool": {"should": [_compile(i) for i in node.items], "minimum_should_match": 1}}
    if isinstance(node, ql.Not):
        # A bool with only must_not matches every document but these: pure negation.
        return {"bool": {"must_not": [_compile(node.item)]}}
    raise TypeError(f"not a query node: {type(node).__name__}")


def _text_query(terms: tuple[str, ...], prefix: bool) -> dict[str, Any]:
    """Terms next to each other in ``folded``; with ``prefix`` the last one is a prefix."""
    if len(terms) == 1:
        return {"prefix" if prefix else "term": {"folded": terms[0]}}
    if not prefix:
        return {"match_phrase": {"folded": {"query": " ".join(terms), "analyzer": "whitespace"}}}
    clauses: list[dict[str, Any]] = [{"span_term": {"folded": term}} for term in terms[:-1]]
    clauses.append({"span_multi": {"match": {"prefix": {"folded": terms[-1]}}}})
    return {"span_near": {"clauses": clauses, "slop": 0, "in_order": True}}

