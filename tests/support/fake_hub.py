"""A miniature Hugging Face Hub over HTTP, for pull tests (pointed at with ``HF_ENDPOINT``).

It serves the two endpoints ``huggingface_hub`` uses to pull: the repo's file list with sizes and
hashes (``/api/models/ORG/REPO[/revision/REV]?blobs=true``) and the files themselves
(``/ORG/REPO/resolve/REV/FILE``, honouring ``Range``). ``*.safetensors`` files are listed as LFS
files (sha256), the rest as git blobs (sha1 object id), as on the real Hub. Faults can be injected
per file: a connection dropped after N bytes (once), or content that no longer matches its hash.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubRepo:
    files: dict[str, bytes]

    @classmethod
    def from_directory(cls, path: Path) -> HubRepo:
        return cls({f.name: f.read_bytes() for f in sorted(path.iterdir()) if f.is_file()})

    def listing(self, repo: str) -> dict[str, object]:
        siblings = []
        for name, data in sorted(self.files.items()):
            entry: dict[str, object] = {
                "rfilename": name,
                "size": len(data),
                "blobId": hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest(),
            }
            if name.endswith((".safetensors", ".gguf")):
                entry["lfs"] = {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            siblings.append(entry)
        return {"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "siblings": siblings}


@dataclass
class FakeHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)  # file -> bytes sent before hanging up (once)
    corrupt: set[str] = field(default_factory=set)  # files served with one byte flipped
    fail_next: set[str] = field(default_factory=set)  # files whose next request gets a 500 (once)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    url: str = ""

    def downloads(self, filename: str) -> list[str | None]:
        """The Range header of every GET of ``filename`` (None for a whole-file request)."""
        return [
            rng for method, path, rng in self.requests if method == "GET" and path.endswith("/" + filename)
        ]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

        def _error(self, status: int, code: str) -> None:
            body = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.do_GET(head=True)

        def do_GET(self, head: bool = False) -> None:
            path = self.path.split("?")[0]
            hub.requests.append((self.command, path, self.headers.get("Range")))
            info = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path)
            if info:
                repo = hub.repos.get(info.group(1))
                if repo is None:
                    return self._error(404, "RepoNotFound")
                body = json.dumps(repo.listing(info.group(1))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None
            resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if not resolve or resolve.group(1) not in hub.repos:
                return self._error(404, "RepoNotFound")
            data = hub.repos[resolve.group(1)].files.get(resolve.group(3))
            if data is None:
                return self._error(404, "EntryNotFound")
            name = resolve.group(3)
            if name in hub.fail_next:
                hub.fail_next.discard(name)
                return self._error(500, "InternalError")
            if name in hub.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = 0
            wanted = self.headers.get("Range")
            if wanted and (m := re.fullmatch(r"bytes=(\d+)-", wanted)):
                start = int(m.group(1))
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.end_headers()
            if head:
                return None
            cut = hub.drop_after.pop(name, None)
            if cut is not None:
                self.wfile.write(data[start : start + cut])
                self.wfile.flush()
                self.close_connection = True
                return None  # the client sees the body end early, as on a dropped connection
            self.wfile.write(data[start:])
            return None

    return Handler


@contextmanager
def running_hub(hub: FakeHub) -> Iterator[FakeHub]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
