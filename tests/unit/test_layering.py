"""The architecture's arrows, checked on the source: a forbidden import fails here, not in review.

- ``validation`` is pure: it imports neither ``app`` nor ``inference``, nor trio, Quart or a backend.
- ``inference`` never imports ``app`` (nor the HTTP stack).
- ``mlx`` / ``mlx_lm`` are imported only under ``inference/backends/mlx/``, ``llama_cpp`` only under
  ``inference/backends/llamacpp/``.

Every import counts, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "inference", "validation")
HTTP_STACK = ("quart", "quart_trio", "hypercorn", "werkzeug")
BACKEND_LIBRARIES = {"mlx": "inference/backends/mlx/", "mlx_lm": "inference/backends/mlx/"}
BACKEND_LIBRARIES |= {"llama_cpp": "inference/backends/llamacpp/"}


def imports(path: Path) -> set[str]:
    """The top-level packages and full module names ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def forbidden(relative: str, module: str) -> str | None:
    top = module.split(".")[0]
    if relative.startswith("validation/") and top in (
        "app",
        "inference",
        "trio",
        *HTTP_STACK,
        *BACKEND_LIBRARIES,
    ):
        return "validation is pure"
    if relative.startswith("inference/") and top in ("app", *HTTP_STACK):
        return "inference never imports the HTTP layer"
    home = BACKEND_LIBRARIES.get(top)
    if home is not None and not relative.startswith(home):
        return f"{top} is imported only under {home}"
    return None


def test_no_forbidden_arrow() -> None:
    problems = [
        f"{path.relative_to(ROOT)} imports {module}: {why}"
        for path in sources()
        for module in sorted(imports(path))
        if (why := forbidden(path.relative_to(ROOT).as_posix(), module))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("relative", "module"),
    [
        ("validation/structured.py", "inference.engine.job"),
        ("validation/grammars.py", "trio"),
        ("inference/engine/scheduler.py", "app.protocol.errors"),
        ("inference/engine/scheduler.py", "quart"),
        ("app/server.py", "mlx.core"),
        ("inference/backends/mlx/backend.py", "llama_cpp"),
    ],
)
def test_the_rules_catch_each_kind_of_arrow(relative: str, module: str) -> None:
    assert forbidden(relative, module)
