"""Pure parts of the media fetcher: digest forms, the back-off schedule, response checks."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta

import pytest
import requests

from archiver import media
from archiver.config import Settings
from archiver.errors import ConfigError

DATA = b"meter reading"
RAW = hashlib.sha256(DATA).digest()


@pytest.mark.parametrize("form", [
    RAW.hex(),
    RAW.hex().upper(),
    base64.b64encode(RAW).decode(),  # live webhooks: 44 chars ending "="
    base64.b64encode(RAW).decode().rstrip("="),  # unpadded
    base64.urlsafe_b64encode(RAW).decode(),
    f"  {RAW.hex()}\n",
])
def test_decode_sha256_accepts_hex_and_base64(form: str) -> None:
    assert media.decode_sha256(form) == RAW


def test_live_webhook_example_digest_decodes_to_32_bytes() -> None:
    assert len(media.decode_sha256("q1Vd7b0m9e4oY3vTq8mX0pC7yJk2aR5sW6uZ1nE4fHg=")) == 32


@pytest.mark.parametrize("bad", [
    "", "abc", RAW.hex()[:-1], "z" * 64, RAW.hex() + "00",
    base64.b64encode(RAW[:31]).decode(),  # 44 chars of base64, but not 32 bytes
    base64.b64encode(RAW).decode()[:-2] + "!=",
    base64.b64encode(RAW + b"x").decode(),
])
def test_decode_sha256_refuses_anything_else(bad: str) -> None:
    with pytest.raises(ValueError):
        media.decode_sha256(bad)


def test_check_digest_compares_raw_bytes_across_forms() -> None:
    media.check_digest(RAW, base64.b64encode(RAW).decode())
    media.check_digest(RAW, RAW.hex())
    media.check_digest(RAW, None)  # not stated: nothing to compare
    with pytest.raises(ValueError):
        media.check_digest(RAW, hashlib.sha256(b"other").hexdigest())
    with pytest.raises(ValueError):
        media.check_digest(RAW, "not-a-digest")  # unreadable fails closed


def test_retry_delay_doubles_from_30_seconds_and_caps_at_an_hour() -> None:
    got = [media.retry_delay(n).total_seconds() for n in range(1, 10)]
    assert got == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert media.retry_delay(10_000) == timedelta(hours=1)  # no overflow, still capped
    assert media.retry_delay(0) == timedelta(seconds=30)


def test_default_retry_window_fits_well_inside_the_media_id_lifetime() -> None:
    attempts = Settings.from_env({"ARCHIVER_HOME": "/nonexistent"}).media_max_attempts
    window = sum((media.retry_delay(n) for n in range(1, attempts)), timedelta())
    assert window < timedelta(hours=2) < media.ID_LIFETIME
    # Even 160 attempts (all at the cap) would end inside 7 days; expiry ends any more.
    assert sum((media.retry_delay(n) for n in range(1, 160)), timedelta()) < media.ID_LIFETIME


def test_max_attempts_comes_from_the_environment() -> None:
    env = {"ARCHIVER_HOME": "/nonexistent", "ARCHIVER_MEDIA_MAX_ATTEMPTS": "3"}
    assert Settings.from_env(env).media_max_attempts == 3
    with pytest.raises(ConfigError):
        Settings.from_env({**env, "ARCHIVER_MEDIA_MAX_ATTEMPTS": "many"})


def _response(status: int, body: object) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode()
    return resp


@pytest.mark.parametrize("status, body, code, down", [
    (401, {"error": {"type": "OAuthException", "code": 190}}, "http-401", True),
    (400, {"error": {"type": "OAuthException", "code": 190}}, "http-400", True),  # expired token
    (404, {"error": {"type": "GraphMethodException", "code": 100}}, "http-404", False),
    (500, "oops", "http-500", False),
    (429, {"error": {"code": 4}}, "http-429", False),
])
def test_http_failures_map_to_codes(status: int, body: object, code: str, down: bool) -> None:
    failure = media._http_failure(_response(status, body), token_proven=False)
    assert failure.code == code and isinstance(failure, media._GraphDown) is down
    assert failure.counts is not down
    # Once step 1 accepted the token, a refusal of the download is about that file only.
    after = media._http_failure(_response(status, body), token_proven=True)
    assert after.code == code and after.counts and not isinstance(after, media._GraphDown)


@pytest.mark.parametrize("doc, code", [
    ({"mime_type": "image/jpeg"}, "bad-response"),
    ({"url": "file:///etc/passwd"}, "bad-response"),
    ([1, 2], "bad-response"),
    ({"url": "http://lookaside.example/x"}, "insecure-url"),
    ({"url": "https://lookaside.example/x", "file_size": media.MAX_BYTES + 1}, "too-large"),
])
def test_media_endpoint_answers_are_checked(doc: object, code: str) -> None:
    with pytest.raises(media._Failed) as err:
        media._located(doc, https_only=True)
    assert err.value.code == code


def test_located_url_is_never_in_its_repr() -> None:
    got = media._located({"url": "https://lookaside.example/?mid=1&hash=AR", "sha256": RAW.hex(),
                          "mime_type": "image/jpeg"}, https_only=True)
    assert got.sha256 == RAW.hex() and "lookaside" not in repr(got)


def test_media_ids_that_are_not_plain_ids_are_refused_before_any_request() -> None:
    settings = Settings.from_env({"ARCHIVER_HOME": "/nonexistent", "ARCHIVER_GRAPH_TOKEN": "tok-123",
                                  "ARCHIVER_GRAPH_URL": "http://127.0.0.1:9"})
    with requests.Session() as http:
        graph = media.Graph(settings, http)
        with pytest.raises(media._Failed) as err:
            graph.locate("../me")
    assert err.value.code == "bad-media-id" and err.value.final
    assert "tok-123" not in repr(graph)
