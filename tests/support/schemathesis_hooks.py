"""Schemathesis checks loaded by ``tests/http/test_openapi.py``: every error is JSON with an ``error``,
and no 5xx but a documented one."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.check
def errors_are_json(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return
    try:
        body = json.loads(response.content)
    except ValueError as error:
        raise AssertionError(
            f"a {response.status_code} whose body is not JSON: {response.content[:200]!r}"
        ) from error
    if not isinstance(body, dict) or "error" not in body:
        raise AssertionError(f"a {response.status_code} without an 'error' field: {body!r}")


@schemathesis.check
def no_unplanned_server_error(ctx: Any, response: Any, case: Any) -> None:
    """A 5xx only where the document promises that status (the 501 of a route not built yet)."""
    if response.status_code < 500:
        return
    documented = case.operation.definition.raw.get("responses", {})
    if str(response.status_code) not in documented or response.status_code == 500:
        raise AssertionError(f"server error {response.status_code}: {response.content[:200]!r}")
