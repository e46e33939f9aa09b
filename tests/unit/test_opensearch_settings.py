"""Index settings the OpenSearch driver creates its indices with (no request is sent)."""

from __future__ import annotations

from archiver.search.opensearch import OpenSearchIndex  # opensearch-py: a test dependency, so no skip


def _index_settings(url: str) -> dict[str, int]:
    settings: dict[str, int] = OpenSearchIndex.from_url(url)._template()["template"]["settings"]["index"]
    return settings


def test_single_node_default_has_no_replicas() -> None:
    # One node cannot place a replica: with 0 the cluster is green, not yellow.
    assert _index_settings("http://127.0.0.1:9200/a") == {"number_of_shards": 1, "number_of_replicas": 0}


def test_replicas_and_shards_are_configurable() -> None:
    assert _index_settings("http://127.0.0.1:9200/a?replicas=2&shards=3") == {"number_of_shards": 3,
                                                                              "number_of_replicas": 2}
