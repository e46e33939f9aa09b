"""The test helpers that wait on ``archiver serve``: a slow or refused /healthz is "not yet", never a crash."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.serving import free_port, healthy, wait_until


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class SlowFirstHealthz:
    """/healthz whose first answer waits until the test releases it (as a cold service's first request)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, environ: Any, start_response: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.release.wait(30)
        return Response("ok")(environ, start_response) if Request(environ).path == "/healthz" else \
            Response("no", 404)(environ, start_response)


@pytest.fixture
def slow() -> Iterator[tuple[SlowFirstHealthz, int]]:
    app = SlowFirstHealthz()
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield app, server.server_port
    finally:
        app.release.set()
        server.shutdown()
        server.server_close()


def test_a_slow_first_healthz_is_not_yet_healthy_and_the_next_poll_succeeds(slow: tuple[SlowFirstHealthz, int]) -> None:
    app, port = slow
    assert healthy(port, request_timeout=0.2) is False  # ReadTimeout: not raised, "not yet"
    app.release.set()
    assert wait_until(lambda: healthy(port, request_timeout=5), 10, "/healthz to answer") is True
    assert app.calls >= 2


def test_a_refused_connection_is_not_yet_healthy() -> None:
    assert healthy(free_port(), request_timeout=1) is False


def test_wait_until_returns_the_value_and_names_what_it_waited_for() -> None:
    values = iter([0, None, "", 7])
    assert wait_until(lambda: next(values), 5, "a value", interval=0) == 7
    with pytest.raises(AssertionError, match="waited 0.1s for the impossible"):
        wait_until(lambda: False, 0.1, "the impossible", interval=0.01)
