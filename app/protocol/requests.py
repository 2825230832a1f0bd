"""Request bodies, written once: pydantic models that check every route's JSON and generate the
API document (``/openapi.json``).

Each route reads its body through :func:`read_request`: the JSON is checked against the route's
model (strictly, as Go's decoder in Ollama does: ``"5"`` is not a number, ``1`` is not a boolean),
a failure becomes one 400 in the dialect's wording (:func:`describe`), and the route gets the
declared fields it was sent, as sent. Fields a model does not declare are dropped, as Ollama and
OpenAI ignore them, so a route can only read what is documented. Semantic checks (a schema that
cannot be enforced, a context over the window) stay where they are made, after this one.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from app.protocol.errors import BadRequest

Dialect = Literal["ollama", "openai"]

# -- Ollama's /api/* -------------------------------------------------------------------------


class Body(BaseModel):
    """A request body: strict JSON types, undeclared fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)
    # Fields whose wrong shapes the semantic checks word, in Ollama's own terms (``invalid think
    # value: "very"``, ``Unsupported type: 'bool'``): the model documents them, those checks speak.
    worded_later: ClassVar[frozenset[str]] = frozenset()


class Options(BaseModel):
    """Ollama's ``options`` (and a Modelfile's ``PARAMETER`` lines); other keys are ignored."""

    model_config = ConfigDict(strict=True, extra="allow")
    temperature: float | None = Field(None, description="sampling temperature; 0 is greedy", examples=[0.7])
    top_k: int | None = Field(None, description="sample among the k likeliest tokens", examples=[40])
    top_p: float | None = Field(None, description="nucleus sampling mass", examples=[0.9])
    min_p: float | None = Field(
        None, description="drop tokens below this fraction of the likeliest", examples=[0.05]
    )
    typical_p: float | None = Field(None, description="accepted, not applied", examples=[1.0])
    seed: int | None = Field(None, description="random seed (negative: none)", examples=[42])
    num_predict: int | None = Field(
        None, description="most tokens to generate (-1: until the window)", examples=[128]
    )
    num_ctx: int | None = Field(None, description="context window in tokens", examples=[4096])
    num_batch: int | None = Field(
        None, description="prompt tokens read per step (prefill chunk)", examples=[512]
    )
    num_keep: int | None = Field(
        None, description="tokens a shortened single prompt keeps from its start", examples=[4]
    )
    repeat_penalty: float | None = Field(None, description="penalty on recent tokens (> 0)", examples=[1.1])
    repeat_last_n: int | None = Field(
        None, description="how many recent tokens the penalty sees (-1: num_ctx)", examples=[64]
    )
    presence_penalty: float | None = Field(
        None, description="penalty on tokens already present", examples=[0.0]
    )
    frequency_penalty: float | None = Field(
        None, description="penalty by how often a token appeared", examples=[0.0]
    )
    stop: list[str] | None = Field(
        None, description="strings that end the reply (not included)", examples=[["\n\n"]]
    )
    mirostat: int | None = Field(None, description="accepted, not applied", examples=[0])
    mirostat_tau: float | None = Field(None, description="accepted, not applied", examples=[5.0])
    mirostat_eta: float | None = Field(None, description="accepted, not applied", examples=[0.1])
    tfs_z: float | None = Field(None, description="accepted, not applied", examples=[1.0])
    num_gpu: int | None = Field(None, description="accepted, not applied", examples=[1])
    main_gpu: int | None = Field(None, description="accepted, not applied", examples=[0])
    num_thread: int | None = Field(
        None, description="accepted, not applied (see TRILLM_NUM_THREAD)", examples=[4]
    )
    draft_num_predict: int | None = Field(None, description="accepted, not applied", examples=[0])
    use_mmap: bool | None = Field(None, description="accepted, not applied", examples=[True])
    use_mlock: bool | None = Field(None, description="accepted, not applied", examples=[False])
    numa: bool | None = Field(None, description="accepted, not applied", examples=[False])
    low_vram: bool | None = Field(None, description="accepted, not applied", examples=[False])
    f16_kv: bool | None = Field(None, description="accepted, not applied", examples=[True])
    penalize_newline: bool | None = Field(None, description="accepted, not applied", examples=[True])


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    name: str
    arguments: dict[str, Any] | str | None = None


class ToolCall(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    id: str | None = None
    type: str | None = None
    function: ToolCallFunction


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(strict=True, extra="ignore")
    role: str = Field(
        description="system, user, assistant or tool (any case)",
        json_schema_extra={"enum": ["system", "user", "assistant", "tool"]},
    )
    content: str | None = Field(None, examples=["Why is the sky blue?"])
    thinking: str | None = Field(None, description="an assistant turn's reasoning, sent back")
    tool_calls: list[ToolCall] | None = Field(None, description="an assistant turn's tool calls")
    tool_name: str | None = Field(None, description="a tool message: the tool that answered")
    tool_call_id: str | None = Field(None, description="a tool message: the call it answers")
    images: list[str] | None = Field(
        None, description="base64 images (PNG, JPEG, WebP, ...) for a vision model"
    )


class FunctionDef(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    name: str = Field(examples=["get_weather"])
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="a JSON Schema for the arguments")
    strict: bool | None = Field(None, description="accepted; schemas are always enforced")


class Tool(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedTool(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["function"]
    function: dict[str, str]


FormatField = Field(
    None,
    description='"json", or a JSON Schema the reply is decoded to and validated against',
    examples=["json"],
)
ThinkField = Field(
    None, description='reasoning on or off, or a level: "low", "medium", "high", "max"', examples=[True]
)
KeepAliveField = Field(
    None,
    description="how long the model stays loaded: seconds, or a duration such as 5m (negative: forever)",
    examples=["5m"],
)
ToolChoiceField = Field(
    None,
    description='trillm extension on /api/chat: "auto", "none", "required" ("any"), or one named function',
    examples=["auto"],
)
ModelField = Field(
    None, description="the model's name", examples=["fake"], json_schema_extra={"minLength": 1}
)
EmbeddingModelField = Field(
    None, description="an embedding model's name", examples=["fakeembed"], json_schema_extra={"minLength": 1}
)


class ChatRequest(Body):
    """``POST /api/chat``."""

    model_config = ConfigDict(json_schema_extra={"required": ["model"]})
    worded_later = frozenset({"format", "think", "tools", "keep_alive", "tool_choice", "parallel_tool_calls"})
    model: str | None = ModelField
    messages: list[Message] | None = Field(None, description="the conversation so far")
    stream: bool | None = Field(None, description="NDJSON chunks (default) or one object", examples=[False])
    options: Options | None = None
    keep_alive: float | str | None = KeepAliveField
    format: Literal["json", ""] | dict[str, Any] | None = FormatField
    tools: list[Tool] | None = Field(None, description="functions the model may call")
    think: bool | Literal["low", "medium", "high", "max"] | None = ThinkField
    logprobs: bool | None = Field(None, description="report each token's log-probability", examples=[True])
    top_logprobs: int | None = Field(None, description="alternatives per token, 0 to 20", examples=[2])
    truncate: bool | None = Field(
        None,
        description="shorten an over-long prompt (default); false: a 400 instead",
        examples=[True],
    )
    tool_choice: Literal["auto", "none", "required", "any"] | NamedTool | None = ToolChoiceField
    parallel_tool_calls: bool | None = Field(
        None, description="trillm extension: false allows one call", examples=[True]
    )


class GenerateRequest(Body):
    """``POST /api/generate``."""

    model_config = ConfigDict(json_schema_extra={"required": ["model"]})
    worded_later = frozenset({"format", "think", "keep_alive", "context"})
    model: str | None = ModelField
    prompt: str | None = Field(
        None, description="the prompt; none loads the model", examples=["Why is the sky blue?"]
    )
    system: str | None = Field(None, description="a system prompt", examples=["Answer briefly."])
    raw: bool | None = Field(
        None, description="send the prompt as is, without the chat template", examples=[False]
    )
    context: list[int] | None = Field(None, description="a previous reply's context, to continue it")
    stream: bool | None = Field(None, description="NDJSON chunks (default) or one object", examples=[False])
    options: Options | None = None
    keep_alive: float | str | None = KeepAliveField
    format: Literal["json", ""] | dict[str, Any] | None = FormatField
    think: bool | Literal["low", "medium", "high", "max"] | None = ThinkField
    logprobs: bool | None = Field(None, description="report each token's log-probability", examples=[True])
    top_logprobs: int | None = Field(None, description="alternatives per token, 0 to 20", examples=[2])
    truncate: bool | None = Field(
        None,
        description="shorten an over-long prompt (default); false: a 400 instead",
        examples=[True],
    )
    template: str | None = Field(None, description="refused: not supported yet")
    suffix: str | None = Field(None, description="refused: not supported yet")
    images: list[str] | None = Field(
        None, description="base64 images (PNG, JPEG, WebP, ...) for a vision model"
    )


class ModelRequest(Body):
    """A body naming one model (``name`` is the older spelling)."""

    model_config = ConfigDict(json_schema_extra={"required": ["model"]})
    model: str | None = ModelField
    name: str | None = Field(None, description="older spelling of model")


class ShowRequest(ModelRequest):
    """``POST /api/show``."""

    verbose: bool | None = Field(None, description="include the full tokenizer metadata", examples=[False])


class PullRequest(ModelRequest):
    """``POST /api/pull``: a Hugging Face repository (``org/repo[:quant]``)."""

    stream: bool | None = Field(None, description="progress lines (default) or one object", examples=[False])
    insecure: bool | None = Field(None, description="accepted, not applied", examples=[False])


class CreateRequest(ModelRequest):
    """``POST /api/create``: from a stored model or uploaded files, with Modelfile fields."""

    worded_later = frozenset({"license"})
    from_: str | None = Field(None, alias="from", description="the base model", examples=["fake"])
    files: dict[str, str] | None = Field(None, description="file name -> sha256 digest of an uploaded blob")
    system: str | None = Field(None, description="the system prompt", examples=["You are terse."])
    template: str | None = Field(None, description="a Jinja chat template")
    license: str | list[str] | None = Field(None, description="license text")
    parameters: Options | None = Field(None, description="default options")
    messages: list[Message] | None = Field(None, description="example conversation")
    stream: bool | None = Field(None, description="progress lines (default) or one object", examples=[False])
    quantize: str | None = Field(None, description="refused: not supported")
    adapters: dict[str, str] | None = Field(None, description="refused: not supported")


class CopyRequest(Body):
    """``POST /api/copy``."""

    model_config = ConfigDict(json_schema_extra={"required": ["source", "destination"]})
    source: str | None = Field(None, examples=["fake"], json_schema_extra={"minLength": 1})
    destination: str | None = Field(None, examples=["fake-copy"], json_schema_extra={"minLength": 1})


class DeleteRequest(ModelRequest):
    """``DELETE /api/delete``."""


class EmbedRequest(Body):
    """``POST /api/embed``: unit-length vectors, one per input, in order."""

    worded_later = frozenset({"keep_alive"})
    model_config = ConfigDict(json_schema_extra={"required": ["model"]})
    model: str | None = EmbeddingModelField
    input: str | list[str] | None = Field(
        None, description="a string or an array of strings", examples=["hello"]
    )
    truncate: bool | None = Field(
        None, description="cut inputs to the context (default); false: a 400 instead", examples=[True]
    )
    dimensions: int | None = Field(
        None, description="keep the first N values, then re-normalise", examples=[8]
    )
    options: Options | None = None
    keep_alive: float | str | None = KeepAliveField


class LegacyEmbeddingsRequest(Body):
    """``POST /api/embeddings`` (Ollama's older route): one vector, as the model pools it."""

    worded_later = frozenset({"keep_alive"})
    model_config = ConfigDict(json_schema_extra={"required": ["model"]})
    model: str | None = EmbeddingModelField
    prompt: str | None = Field(None, examples=["hello"])
    options: Options | None = None
    keep_alive: float | str | None = KeepAliveField


# -- OpenAI's /v1/* --------------------------------------------------------------------------


class ImageUrl(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    url: str = Field(description="a base64 data URL (data:image/png;base64,...); the server fetches no URL")
    detail: str | None = Field(None, description="accepted, not used")


class ContentPart(BaseModel):
    """A ``text`` part, or an ``image_url`` part for a vision model."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str = Field(examples=["text", "image_url"])
    text: str | None = None
    image_url: ImageUrl | str | None = None


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = Field(None, examples=["Hello"])
    name: str | None = Field(None, description="a tool message: the tool's name")
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = Field(None, description="an assistant turn's reasoning, sent back")
    reasoning: str | None = Field(None, description="the same, as some clients name it")


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool | None = None


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class Reasoning(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    effort: str | None = None


class OpenAIBody(Body):
    """The sampling fields both OpenAI routes share."""

    model_config = ConfigDict(json_schema_extra={"required": ["model"]})
    model: str | None = ModelField
    stream: bool | None = Field(
        None, description="Server-Sent Events, or one object (default)", examples=[False]
    )
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, examples=[64])
    temperature: float | None = Field(None, description="default 1", examples=[0.7])
    top_p: float | None = Field(None, description="default 1", examples=[1.0])
    seed: int | None = Field(None, examples=[1])
    stop: str | list[str] | None = Field(None, examples=[["\n\n"]])
    presence_penalty: float | None = Field(None, examples=[0.0])
    frequency_penalty: float | None = Field(None, examples=[0.0])
    n: int | None = Field(None, description="only 1", examples=[1])
    user: str | None = Field(None, description="accepted, not used")


class ChatCompletionRequest(OpenAIBody):
    """``POST /v1/chat/completions``."""

    model_config = ConfigDict(json_schema_extra={"required": ["model", "messages"]})
    messages: list[OpenAIMessage] | None = None
    max_completion_tokens: int | None = Field(None, description="wins over max_tokens", examples=[64])
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedTool | None = Field(None, examples=["auto"])
    parallel_tool_calls: bool | None = Field(None, examples=[True])
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = Field(
        None, description="none, minimal, low, medium, high or xhigh", examples=["low"]
    )
    reasoning: Reasoning | None = None
    logprobs: bool | None = Field(None, examples=[True])
    top_logprobs: int | None = Field(None, examples=[2])


class CompletionRequest(OpenAIBody):
    """``POST /v1/completions``."""

    model_config = ConfigDict(json_schema_extra={"required": ["model", "prompt"]})
    prompt: str | list[str] | None = Field(None, examples=["Once upon a time"])
    logprobs: int | None = Field(None, description="alternatives per token, 0 to 20", examples=[1])
    suffix: str | None = Field(None, description="refused: no fill-in-the-middle")


class EmbeddingsRequest(Body):
    """``POST /v1/embeddings``."""

    model_config = ConfigDict(json_schema_extra={"required": ["model", "input"]})
    model: str | None = EmbeddingModelField
    input: str | list[str] | list[int] | list[list[int]] | None = Field(
        None, description="a string, strings, token ids, or lists of token ids", examples=["hello"]
    )
    dimensions: int | None = Field(None, examples=[8])
    encoding_format: Literal["float", "base64"] | None = Field(
        None, description="base64: little-endian float32", examples=["float"]
    )
    user: str | None = None


# -- reading ---------------------------------------------------------------------------------

JSON_TYPES = {
    "string_type": "string",
    "bool_type": "boolean",
    "int_type": "integer",
    "int_from_float": "integer",
    "float_type": "number",
    "list_type": "array",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
}
OPTION_TYPES = {"number": "float32", "integer": "integer", "boolean": "bool", "array": "array (of strings)"}
ARTICLES = {"string": "a string", "boolean": "a boolean", "integer": "an integer", "number": "a number"}
ARTICLES |= {"array": "an array", "object": "an object"}


def check(model: type[Body], body: dict[str, Any], dialect: Dialect = "ollama") -> dict[str, Any]:
    """``body``'s declared fields, as sent, once they have the declared shapes; else a 400."""
    try:
        model.model_validate(body)
    except ValidationError as error:
        problems = [e for e in error.errors() if not e["loc"] or e["loc"][0] not in model.worded_later]
        if problems:
            message, param = describe(model, problems[0], dialect)
            raise BadRequest(message, param=param) from None
    names = {field.alias or name for name, field in model.model_fields.items()}
    return {key: value for key, value in body.items() if key in names}


def describe(model: type[Body], first: ErrorDetails, dialect: Dialect) -> tuple[str, str | None]:
    """A problem in the words each dialect's clients expect, and the field at fault."""
    loc = [part for part in first["loc"] if not _is_branch(part)]
    key = str(loc[0]) if loc else ""
    kind = JSON_TYPES.get(first["type"])
    where = _dotted(loc)
    if dialect == "openai":
        if kind is not None and len(loc) == 1:
            return f"{key} must be {ARTICLES[kind]}", key
        return f"{where}: {_plain(first)}", key
    if key in ("options", "parameters") and len(loc) == 1:
        return f'field "{key}" must be an object', key
    if key in ("options", "parameters") and len(loc) >= 2 and kind is not None:
        return f'option "{loc[1]}" must be of type {OPTION_TYPES.get(_declared(loc[1]), kind)}', key
    if key == "messages" and len(loc) == 2:
        return f"{where} must be an object", key
    if key == "messages" and len(loc) == 3 and loc[2] == "content":
        return f"{where} must be a string", key
    if kind is not None and len(loc) == 1:
        return f'field "{key}" must be of type {kind}', key
    return f"{where}: {_plain(first)}", key


def _declared(option: object) -> str:
    """The JSON type ``options.<option>`` is declared with."""
    schema = Options.model_json_schema()["properties"].get(str(option), {})
    types = [s.get("type") for s in schema.get("anyOf", [schema])]
    return next((str(t) for t in types if t and t != "null"), "")


def _is_branch(part: object) -> bool:
    """pydantic's union-member tags (``str``, ``list[str]``, ``function-after[...]``) in a location."""
    return isinstance(part, str) and (
        not part.isidentifier() or part in ("str", "int", "float", "bool", "dict", "list")
    )


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _plain(error: Any) -> str:
    message = str(error["msg"])
    if error["type"] == "literal_error":
        return message.replace("Input should be", "must be")
    kind = JSON_TYPES.get(error["type"])
    if kind is not None:
        return f"must be {ARTICLES[kind]}"
    if error["type"] == "missing":
        return "is required"
    return message[0].lower() + message[1:]


def example_body(model: type[Body]) -> dict[str, Any]:
    """A body with every top-level field set to its first example (for the document and tests)."""
    out = {}
    for name, field in model.model_fields.items():
        if field.examples:
            out[field.alias or name] = field.examples[0]
    return out
