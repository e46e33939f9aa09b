"""The composition root: ``create_app`` builds Services once and wires blueprints and errors;
per tier (``archiver.tiers``), a gate in front sends each route to the tier that serves it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from archiver import (
    api, auth, consent_api, contacts_api, disposition_api, erasure_api, export_api, findings_api, holds_api, intake,
    openapi, rejections, reports_api, retention_api, search_api, templates_api, tiers,
)
from archiver.config import Settings
from archiver.console import login as _console_login  # noqa: F401 - puts the login routes on the console blueprint
from archiver.console import pages as console_pages, sessions as console_sessions
from archiver.console import pages_reviews as _console_reviews  # noqa: F401 - puts the Reviews routes on the console blueprint
from archiver.console import pages_holds as _console_holds  # noqa: F401 - puts the holds pages on the console blueprint
from archiver.errors import ArchiverError, ValidationError
from archiver.services import Services

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, services: Services | None = None, tier: str = tiers.ALL,
               relay_to: Path | None = None, behind_relay: bool = False) -> Flask:
    """Build the WSGI app. Raises ConfigError when the settings are unusable.

    ``tier`` (``archiver.tiers``): ``all`` serves every route; ``intake`` serves intake and
    relays read routes to the read tier's socket ``relay_to`` (or refuses them without one);
    ``read`` serves read routes and refuses intake's, taking the client's address from the
    relay when ``behind_relay`` (it listens on the Unix socket only the relay reaches).
    """
    settings = settings or (services.settings if services else Settings.from_env())
    app = Flask(__name__, static_folder=None)
    app.extensions["archiver"] = services or Services.open(settings)
    app.register_blueprint(intake.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(search_api.bp)
    app.register_blueprint(holds_api.bp)
    app.register_blueprint(disposition_api.bp)
    app.register_blueprint(erasure_api.bp)
    app.register_blueprint(export_api.bp)
    app.register_blueprint(retention_api.bp)
    app.register_blueprint(contacts_api.bp)
    app.register_blueprint(reports_api.bp)
    app.register_blueprint(consent_api.bp)
    app.register_blueprint(findings_api.bp)
    app.register_blueprint(templates_api.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(console_pages.bp)
    console_sessions.init_app(app, app.extensions["archiver"])
    app.register_error_handler(ArchiverError, _archiver_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    rejections.init_app(app)
    app.before_request(_check_url)
    app.after_request(_no_store)
    auth.check_route_table(app)
    if tier != tiers.ALL:
        relay = tiers.Relay(relay_to, settings.max_body_bytes) if relay_to is not None and tier == tiers.INTAKE \
            else None
        app.wsgi_app = tiers.Gate(app.wsgi_app, app.url_map, tier, relay,  # type: ignore[method-assign]
                                  trust_remote_header=behind_relay)
    return app


MAX_URL_BYTES = 4096
"""Longest path + query string served; gunicorn's request line limit (server.py) sits above
it, so a longer URL gets this JSON 414 rather than gunicorn's HTML one."""


def _check_url() -> tuple[Response, int] | None:
    """A JSON 414 for a URL over MAX_URL_BYTES, a JSON 400 for a query string that is not UTF-8."""
    environ = request.environ  # WSGI strings are bytes decoded as latin-1: len() counts bytes
    url_bytes = len(environ.get("RAW_URI") or f"{environ.get('PATH_INFO', '')}?{environ.get('QUERY_STRING', '')}")
    if url_bytes > MAX_URL_BYTES:
        return jsonify(error="uri-too-long", message=f"the URL exceeds {MAX_URL_BYTES} bytes"), 414
    try:
        request.query_string.decode("utf-8")  # werkzeug's request.args would raise on it mid-view
    except UnicodeDecodeError as exc:
        raise ValidationError("query", "the query string is not UTF-8") from exc
    return None


def _no_store(response: Response) -> Response:
    # Responses carry decrypted evidence: no cache may keep them, no browser may sniff them.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _archiver_error(exc: ArchiverError) -> tuple[Response, int]:
    return jsonify(exc.as_dict()), exc.http_status


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    return jsonify(error=(exc.name or "error").lower().replace(" ", "-"), message=exc.description), exc.code or 500


def _unexpected(exc: Exception) -> tuple[Response, int]:
    # Log the type and traceback only: exception messages can quote content.
    log.error("request.failed error=%s", exc.__class__.__name__, exc_info=exc)
    return jsonify(error="internal", message="internal error; see the service log"), 500


def wsgi() -> Any:
    """Entry point for WSGI servers (``archiver.app:wsgi()``)."""
    return create_app()
