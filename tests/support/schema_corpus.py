"""Real-world-shaped JSON Schemas: what pydantic, OpenAI's helpers and hand-written specs send.

Each entry is a schema as a client would send it (pydantic's ``model_json_schema()`` output, with
its ``$defs``, ``anyOf`` for Optional, ``const`` for Literal, enums, ``oneOf`` with a discriminator,
recursion, formats, patterns and bounds). Strings and arrays are bounded, as they are in schemas
meant for small models, so an untrained model's reply ends within its token budget.
"""

from __future__ import annotations

from datetime import date
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

Short = Annotated[str, Field(min_length=1, max_length=6)]
Small = Annotated[int, Field(ge=-9, le=99)]


class Color(StrEnum):
    RED = "red"
    GREEN = "green"


class Level(IntEnum):
    LOW = 1
    HIGH = 3


class Address(BaseModel):
    city: Short
    zip: int = Field(ge=1000, le=9999)


class Person(BaseModel):
    name: Short
    age: int = Field(ge=0, le=120)
    address: Address


class Reasoned(BaseModel):
    reasoning: Short
    answer: int = Field(ge=0, le=9)


class Tagged(BaseModel):
    tags: list[Short] = Field(min_length=1, max_length=3)


class WithOptional(BaseModel):
    title: Short
    subtitle: Short | None = None


class WithEnum(BaseModel):
    color: Color
    level: Level


class WithLiteral(BaseModel):
    kind: Literal["a", "b", "c"]
    count: int = Field(ge=0, le=5)


class Node(BaseModel):
    label: Short
    children: list[Node] = Field(default_factory=list, max_length=2)


class Cat(BaseModel):
    pet_type: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    pet_type: Literal["dog"]
    good: bool


class Owner(BaseModel):
    pet: Annotated[Cat | Dog, Field(discriminator="pet_type")]


class Untagged(BaseModel):
    value: Small | Short


class Dated(BaseModel):
    day: date


class Item(BaseModel):
    sku: Annotated[str, Field(pattern=r"^[A-Z]{2}[0-9]{2}$")]
    qty: int = Field(ge=1, le=99)


class Order(BaseModel):
    items: list[Item] = Field(min_length=1, max_length=2)
    status: Literal["new", "paid"]
    note: Short | None = None


class Money(BaseModel):
    cents: int = Field(ge=0, le=100000)
    currency: Literal["EUR", "USD"]


class Invoice(BaseModel):
    total: Money
    lines: list[Money] = Field(max_length=2)


class Flags(BaseModel):
    done: bool
    archived: bool = False


class Scores(BaseModel):
    values: list[Small] = Field(min_length=2, max_length=4)


class Review(BaseModel):
    rating: Literal[1, 2, 3, 4, 5]
    pros: list[Short] = Field(max_length=2)


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0, le=1)


class Entity(BaseModel):
    text: Short
    type: Literal["PER", "ORG", "LOC"]


class Entities(BaseModel):
    entities: list[Entity] = Field(max_length=3)


class Step(BaseModel):
    explanation: Short
    output: Short


class MathReasoning(BaseModel):  # OpenAI's structured outputs example, bounded
    steps: list[Step] = Field(min_length=1, max_length=2)
    final_answer: Short


class Event(BaseModel):
    name: Short
    date: date
    participants: list[Short] = Field(max_length=2)


class Contact(BaseModel):
    email: Annotated[str, Field(pattern=r"^[a-z]{1,5}@[a-z]{1,5}\.(com|org)$")]
    phone: Annotated[str, Field(pattern=r"^\+[0-9]{6,8}$")] | None = None


class Team(BaseModel):
    lead: Person
    members: list[Person] = Field(max_length=1)


class Expression(BaseModel):
    op: Literal["+", "-"]
    left: Small | Expression
    right: Small | Expression


class Settings(BaseModel):
    mode: Literal["fast", "safe"] = "fast"
    retries: int = Field(default=3, ge=0, le=5)
    verbose: bool = False


class Classification(BaseModel):
    label: Color
    alternatives: list[Color] = Field(max_length=2)


class Matrix(BaseModel):
    rows: list[Annotated[list[Small], Field(max_length=3)]] = Field(min_length=1, max_length=2)


class Nested3(BaseModel):
    a: Reasoned
    b: WithEnum
    c: Flags


MODELS: list[type[BaseModel]] = [
    Person,
    Reasoned,
    Tagged,
    WithOptional,
    WithEnum,
    WithLiteral,
    Node,
    Owner,
    Untagged,
    Dated,
    Order,
    Invoice,
    Flags,
    Scores,
    Review,
    Sentiment,
    Entities,
    MathReasoning,
    Event,
    Contact,
    Team,
    Expression,
    Settings,
    Classification,
    Matrix,
    Nested3,
]

NAME = {"type": "string", "minLength": 1, "maxLength": 6}

HAND_WRITTEN: dict[str, dict[str, Any]] = {
    "draft-07 definitions": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"id": {"type": "integer", "minimum": 1, "maximum": 99}},
        "type": "object",
        "properties": {"first": {"$ref": "#/definitions/id"}, "second": {"$ref": "#/definitions/id"}},
        "required": ["first", "second"],
    },
    "const and enum": {
        "type": "object",
        "properties": {"version": {"const": 2}, "channel": {"enum": ["stable", "beta", None]}},
        "required": ["version", "channel"],
    },
    "type list": {
        "type": "object",
        "properties": {"value": {"type": ["integer", "null"], "maximum": 9, "minimum": 0}},
        "required": ["value"],
    },
    "explicitly open object": {
        "type": "object",
        "properties": {"name": NAME},
        "required": ["name"],
        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 9},
        "maxProperties": 2,
    },
    "tuple": {
        "type": "object",
        "properties": {
            "point": {
                "type": "array",
                "prefixItems": [{"type": "integer", "maximum": 9, "minimum": 0}, NAME],
                "items": False,
                "minItems": 2,
            }
        },
        "required": ["point"],
    },
    "exclusive bounds": {
        "type": "object",
        "properties": {"ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
        "required": ["ratio"],
    },
    "nullable nested": {
        "type": "object",
        "properties": {
            "parent": {
                "anyOf": [
                    {"type": "object", "properties": {"name": NAME}, "required": ["name"]},
                    {"type": "null"},
                ]
            }
        },
        "required": ["parent"],
    },
    "uuid format": {
        "type": "object",
        "properties": {"id": {"type": "string", "format": "uuid"}},
        "required": ["id"],
    },
    "ipv4 format": {
        "type": "object",
        "properties": {"address": {"type": "string", "format": "ipv4"}},
        "required": ["address"],
    },
    "top-level array": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"n": {"type": "integer", "maximum": 9}},
            "required": ["n"],
        },
        "minItems": 1,
        "maxItems": 2,
    },
    "oneOf exclusive": {
        "type": "object",
        "properties": {
            "shape": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"circle": {"type": "integer", "maximum": 9, "minimum": 1}},
                        "required": ["circle"],
                    },
                    {
                        "type": "object",
                        "properties": {"square": {"type": "integer", "maximum": 9, "minimum": 1}},
                        "required": ["square"],
                    },
                ]
            }
        },
        "required": ["shape"],
    },
    "descriptions and titles": {
        "title": "Reply",
        "description": "What the assistant answers.",
        "type": "object",
        "properties": {
            "summary": NAME | {"description": "One word.", "title": "Summary"},
            "score": {"type": "integer", "minimum": 1, "maximum": 5, "examples": [3], "default": 3},
        },
        "required": ["summary", "score"],
    },
    "many properties": {
        "type": "object",
        "properties": {f"field_{i}": {"type": "integer", "minimum": 0, "maximum": 9} for i in range(12)},
        "required": [f"field_{i}" for i in range(12)],
    },
    "array of enums unique": {
        "type": "object",
        "properties": {"days": {"type": "array", "items": {"enum": ["mon", "tue"]}, "maxItems": 2}},
        "required": ["days"],
    },
    "integer multiple": {
        "type": "object",
        "properties": {"step": {"type": "integer", "minimum": 0, "maximum": 50, "multipleOf": 5}},
        "required": ["step"],
    },
}


def corpus() -> dict[str, dict[str, Any]]:
    """Every schema of the corpus by name: the pydantic models' own, then the hand-written ones."""
    out = {model.__name__: model.model_json_schema() for model in MODELS}
    return out | HAND_WRITTEN


def declared_order_holds(value: Any, schema: Any, root: dict[str, Any]) -> bool:
    """Whether every object in ``value`` has its keys in the order ``schema`` declares them."""
    import jsonschema

    if not isinstance(schema, dict):
        return True
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return declared_order_holds(value, target, root)
    for key in ("anyOf", "oneOf"):
        for branch in schema.get(key, []):
            if jsonschema.Draft202012Validator(root | branch).is_valid(value):
                return declared_order_holds(value, branch, root)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        declared = [k for k in properties if k in value]
        if [k for k in value if k in properties] != declared:
            return False
        extra = schema.get("additionalProperties")
        return all(declared_order_holds(v, properties.get(k, extra), root) for k, v in value.items())
    if isinstance(value, list):
        prefix = schema.get("prefixItems", [])
        items = schema.get("items")
        return all(
            declared_order_holds(v, prefix[i] if i < len(prefix) else items, root)
            for i, v in enumerate(value)
        )
    return True
