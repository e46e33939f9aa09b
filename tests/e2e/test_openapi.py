"""The OpenAPI document stays true to the routes Flask serves."""

from __future__ import annotations

import json
from typing import Any

from archiver import openapi
from archiver.roles import ROLES

METHODS = {"get", "post", "put", "patch", "delete"}


def test_every_route_is_documented_with_its_roles_and_nothing_else(app: Any) -> None:
    served = openapi.route_table(app)
    doc = openapi.document()
    documented = {(path, method): tuple(op["x-roles"]) for path, ops in doc["paths"].items()
                  for method, op in ops.items() if method in METHODS}
    assert set(served) - set(documented) == set(), "routes missing from archiver/openapi.py"
    assert set(documented) - set(served) == set(), "documented routes that Flask does not serve"
    for key, roles in served.items():
        assert sorted(documented[key]) == sorted(roles), key  # x-roles is what require() enforces


def test_the_document_is_well_formed(app: Any) -> None:
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1.")
    json.dumps(doc)  # plain JSON
    for path, ops in doc["paths"].items():
        placeholders = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for method, op in ops.items():
            params = op.get("parameters", [])
            assert {p["name"] for p in params if p["in"] == "path"} == placeholders, (path, method)
            assert all(p["required"] for p in params if p["in"] == "path"), (path, method)
            assert set(op["x-roles"]) <= set(ROLES) and op["responses"], (path, method)
            assert ("security" in op) == bool(op["x-roles"]), (path, method)
            for resp in op["responses"].values():
                for media in resp.get("content", {}).values():
                    ref = media["schema"].get("$ref")
                    assert ref is None or ref.split("/")[-1] in doc["components"]["schemas"], ref


def test_the_document_is_served_to_any_role_and_only_with_a_token(client: Any, token: Any) -> None:
    assert client.get("/api/v1/openapi.json").status_code == 401
    for role in ROLES:
        resp = client.get("/api/v1/openapi.json", headers=token(role))
        assert resp.status_code == 200 and resp.get_json() == openapi.document(), role
