"""Progress bars for ``trillm pull`` and ``trillm create``: one bar per file, with speed and ETA."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def show_progress(parts: Iterable[dict[str, Any]], console: Console) -> str:
    """Draw ``parts`` (Ollama progress objects) as they arrive; returns the last status."""
    status = ""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bars: dict[str, TaskID] = {}
        for part in parts:
            status = str(part.get("status", ""))
            digest = part.get("digest")
            if digest and part.get("total"):
                bar = bars.get(digest)
                if bar is None:
                    bar = bars[digest] = progress.add_task(status, total=int(part["total"]))
                progress.update(bar, completed=int(part.get("completed") or 0))
            elif status:
                progress.console.print(status)
    return status
