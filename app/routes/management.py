"""Model management routes: pull, create, copy, delete, and blob uploads for create.

Every name is checked by the store's name grammar before anything touches the disk; bad names
are ``400 invalid model name`` (or Ollama's ``source``/``destination`` wording for copy).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import trio
from quart import Quart, Response, request

from app.protocol import fields
from app.protocol.errors import BadRequest, InternalError, NotFound
from app.protocol.requests import CopyRequest, CreateRequest, DeleteRequest, PullRequest
from app.routes.progress_lines import Report, progress_response
from app.services import Services
from inference.store.manifest import InvalidDigest, Manifest, digest_hex
from inference.store.model_store import (
    ModelNotFound,
    ModelStore,
    ReadOnlyModel,
    StoredModel,
    StoreError,
    safe_relative,
)
from inference.store.names import InvalidModelName, parse_name
from inference.store.pull import PullProgress, pull_model


def _name(body: dict[str, Any], *, required: str = "model is required") -> str:
    value = body.get("model") or body.get("name")
    if value is None or value == "":
        raise BadRequest(required)
    if not isinstance(value, str):
        raise BadRequest('field "model" must be of type string')
    try:
        return str(parse_name(value))
    except InvalidModelName as error:
        raise BadRequest("invalid model name") from error


def register(app: Quart, services: Services) -> None:
    store = services.store

    @app.post("/api/pull")
    async def pull() -> Response:
        body = await fields.read_request(PullRequest)
        name = _name(body, required="invalid model name")
        stream = fields.typed(body, "stream", bool, True)
        token = os.environ.get("HF_TOKEN") or None

        def work(report: Report, should_stop: Callable[[], bool]) -> None:
            pull_model(store, name, report, should_stop, token=token)

        return await progress_response(work, stream=stream)

    @app.post("/api/create")
    async def create() -> Response:
        body = await fields.read_request(CreateRequest)
        name = _name(body)
        stream = fields.typed(body, "stream", bool, True)
        for unsupported in ("quantize", "adapters"):
            if body.get(unsupported):
                raise BadRequest(f'"{unsupported}" is not supported by this server')
        base = _base(services, body)
        files = _files(store, body)
        if base is None and files is None:
            raise BadRequest("neither 'from' or 'files' was specified")
        overrides = _overrides(services, body)

        def work(report: Report, should_stop: Callable[[], bool]) -> None:
            report(PullProgress("reading model metadata"))
            manifest = _manifest(services, name, base, files)
            for digest in sorted(set(manifest.files.values())):
                report(PullProgress(f"using existing layer {digest}"))
            for key, value in overrides.items():
                if key == "parameters":
                    value = {**manifest.parameters, **value}  # PARAMETER lines override the base's
                setattr(manifest, key, value)
            report(PullProgress("writing manifest"))
            store.save(manifest)
            report(PullProgress("success"))

        return await progress_response(work, stream=stream)

    @app.post("/api/copy")
    async def copy() -> Response:
        body = await fields.read_request(CopyRequest)
        source = fields.typed(body, "source", str, "")
        destination = fields.typed(body, "destination", str, "")
        for label, value in (("source", source), ("destination", destination)):
            try:
                parse_name(value)
            except InvalidModelName as error:
                raise BadRequest(f'{label} "{value}" is invalid') from error
        try:
            await trio.to_thread.run_sync(store.copy, source, destination)
        except ModelNotFound as error:
            raise NotFound(f'model "{source}" not found') from error
        except StoreError as error:
            raise BadRequest(str(error)) from error
        return Response("", status=200)

    @app.delete("/api/delete")
    async def delete() -> Response:
        body = await fields.read_request(DeleteRequest)
        name = _name(body)
        try:
            model = await trio.to_thread.run_sync(store.resolve, name)
        except ModelNotFound as error:
            raise NotFound(f"model '{body.get('model') or body.get('name')}' not found") from error
        try:
            store.check_deletable(model)  # before it is unloaded
        except ReadOnlyModel as error:
            raise BadRequest(str(error)) from error
        await services.engine.unload(model.name)
        try:
            await trio.to_thread.run_sync(store.delete, model.name)
        except (ModelNotFound, FileNotFoundError) as error:
            raise NotFound(f"model '{model.name}' not found") from error
        except (StoreError, OSError) as error:
            raise InternalError(f"deleting {model.name} failed: {error}") from error
        return Response("", status=200)

    @app.route("/api/blobs/<digest>", methods=["HEAD", "POST"])
    async def blob(digest: str) -> Response:
        try:
            digest_hex(digest)
        except InvalidDigest as error:
            raise BadRequest(
                f'invalid digest "{digest}": expected sha256:<64 lowercase hex digits>'
            ) from error
        if request.method == "HEAD":
            if store.has_blob(digest):
                return Response("", status=200)
            raise NotFound(f'blob "{digest}" not found')
        if store.has_blob(digest):
            return Response("", status=200)
        staging = store.blob_upload_path()
        try:
            async with await trio.open_file(staging, "wb") as file:
                async for chunk in fields.body_chunks(idle=True):
                    await file.write(chunk)
            await trio.to_thread.run_sync(store.add_blob, staging, digest)
        except StoreError as error:
            raise BadRequest(str(error)) from error
        finally:
            staging.unlink(missing_ok=True)
        return Response("", status=201)


def _base(services: Services, body: dict[str, Any]) -> StoredModel | None:
    source = fields.typed(body, "from", str, "")
    if not source:
        return None
    try:
        return services.store.resolve(source)
    except InvalidModelName as error:
        raise BadRequest(f'"from" names an invalid model: "{source}"') from error
    except ModelNotFound as error:
        raise NotFound(f"model '{source}' not found") from error


def _files(store: ModelStore, body: dict[str, Any]) -> dict[str, str] | None:
    files = fields.typed(body, "files", dict, None)
    if files is None:
        return None
    for filename, digest in files.items():
        try:
            safe_relative(filename)
            if not isinstance(digest, str):
                raise InvalidDigest(str(digest))
            if not store.has_blob(digest):
                raise NotFound(f'blob "{digest}" not found; upload it with POST /api/blobs/{digest}')
        except StoreError as error:
            raise BadRequest(f'"files" holds an unsafe file name: {filename!r}') from error
        except InvalidDigest as error:
            raise BadRequest(f'"files" maps {filename!r} to an invalid digest: {digest!r}') from error
    return {name: f"sha256:{digest_hex(digest)}" for name, digest in files.items()}


GO_TEMPLATE = re.compile(r"\{\{-?\s*(?:\.[A-Z]|(?:range|if|with)\s+\.|end\b|else\b)")


def check_template(template: str) -> None:
    """400 for a TEMPLATE trillm cannot render: Go template syntax (an Ollama Modelfile's), or
    Jinja that does not parse."""
    if GO_TEMPLATE.search(template):
        raise BadRequest(
            "TEMPLATE looks like a Go template (Ollama's {{ .Prompt }} syntax); trillm uses Jinja chat "
            "templates as Hugging Face models ship them: drop the TEMPLATE line to use the model's own, "
            "or write it in Jinja ({{ messages }}, {% for message in messages %})"
        )
    import jinja2

    try:
        # The extensions transformers renders chat templates with ({% break %}, {% do %}).
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do"]).parse(template)
    except jinja2.TemplateSyntaxError as error:
        message = error.message or ""
        if "'generation'" in message or "'endgeneration'" in message:
            return  # transformers' own tag for marking the assistant's part
        raise BadRequest(
            f"TEMPLATE is not a valid Jinja template: {error.message} (line {error.lineno})"
        ) from error


def _overrides(services: Services, body: dict[str, Any]) -> dict[str, Any]:
    """The Modelfile-style fields of a create request, checked now so that errors are a 400."""
    out: dict[str, Any] = {}
    for key in ("system", "template"):
        value = fields.typed(body, key, str, None)
        if value is not None:
            out[key] = value
    if out.get("template"):
        check_template(out["template"])
    license_ = body.get("license")
    if license_ is not None:
        if isinstance(license_, list) and all(isinstance(x, str) for x in license_):
            license_ = "\n".join(license_)
        if not isinstance(license_, str):
            raise BadRequest('field "license" must be a string or an array of strings')
        out["license"] = license_
    parameters = fields.typed(body, "parameters", dict, None)
    if parameters is not None:
        fields.Options(parameters, services.settings.context_length)  # 400 for a bad value
        out["parameters"] = parameters
    if body.get("messages") is not None:
        out["messages"] = fields.messages(body)
    return out


def _manifest(
    services: Services, name: str, base: StoredModel | None, files: dict[str, str] | None
) -> Manifest:
    store = services.store
    now = datetime.now().astimezone().isoformat()
    if files is not None:
        return Manifest(
            name=name, files=files, info=store.describe_files(files), source="files", created_at=now
        )
    assert base is not None
    if base.manifest is None:
        manifest = store.import_model(base, name, source=f"from {base.name}")
    else:
        manifest = replace(base.manifest, name=name, source=f"from {base.name}")
    manifest.parent = base.name
    manifest.created_at = now
    return manifest
