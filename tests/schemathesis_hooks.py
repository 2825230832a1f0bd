"""A schemathesis check loaded by ``tests/test_openapi.py``: every error is JSON with an ``error``."""

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
