"""Hand-written schemas in the shapes people send: configuration files, Kubernetes-style resources
and function-calling tools, with the keywords strict compilers refuse (``oneOf``,
``dependencies``, ``uniqueItems``, unknown formats, ``patternProperties``, recursion)."""

from __future__ import annotations

from typing import Any

S = {"type": "string"}
I = {"type": "integer"}  # noqa: E741
B = {"type": "boolean"}
N = {"type": "number"}
LABELS = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}}
INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[0-9]+%?$"}]}
QUANTITY = {"oneOf": [{"type": "string", "pattern": "^[0-9.]+(m|Ki|Mi|Gi|Ti)?$"}, {"type": "number"}]}


def obj(properties: dict[str, Any], *required: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    return out | extra


def array(items: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items} | extra


def tool(description: str, properties: dict[str, Any], *required: str, **extra: Any) -> dict[str, Any]:
    return obj(properties, *required, additionalProperties=False, description=description, **extra)


METADATA = obj(
    {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": S,
        "labels": LABELS,
        "annotations": {"type": "object", "additionalProperties": S},
        "uid": {"type": "string", "format": "uuid"},
        "creationTimestamp": {"type": "string", "format": "date-time"},
    },
    "name",
)
CONTAINER = obj(
    {
        "name": S,
        "image": S,
        "command": array(S),
        "args": array(S),
        "env": array(
            obj(
                {
                    "name": S,
                    "value": S,
                    "valueFrom": obj(
                        {
                            "secretKeyRef": obj({"name": S, "key": S}, "key"),
                            "configMapKeyRef": obj({"name": S, "key": S}, "key"),
                        },
                        maxProperties=1,
                        minProperties=1,
                    ),
                },
                "name",
            )
        ),
        "ports": array(
            obj(
                {
                    "containerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                },
                "containerPort",
            ),
            uniqueItems=True,
        ),
        "resources": obj(
            {
                "limits": {"type": "object", "additionalProperties": QUANTITY},
                "requests": {"type": "object", "additionalProperties": QUANTITY},
            }
        ),
        "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    },
    "name",
    "image",
)
POD_SPEC = obj(
    {
        "containers": array(CONTAINER, minItems=1),
        "initContainers": array(CONTAINER),
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never"]},
        "nodeSelector": LABELS,
        "serviceAccountName": S,
        "volumes": array(
            obj(
                {
                    "name": S,
                    "emptyDir": {"type": "object"},
                    "configMap": obj({"name": S}),
                    "secret": obj({"secretName": S}),
                },
                "name",
            )
        ),
    },
    "containers",
)


def resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return obj(
        {"apiVersion": S, "kind": {"const": kind}, "metadata": METADATA, "spec": spec},
        "apiVersion",
        "kind",
        "metadata",
    )


TREE: dict[str, Any] = {
    "$defs": {"node": obj({"name": S, "children": array({"$ref": "#/$defs/node"})}, "name")},
    "$ref": "#/$defs/node",
}

HAND_WRITTEN: dict[str, dict[str, Any]] = {
    # -- Kubernetes-style resources --------------------------------------------------------------
    "k8s Deployment": resource(
        "Deployment",
        obj(
            {
                "replicas": {"type": "integer", "minimum": 0},
                "selector": obj({"matchLabels": LABELS}),
                "strategy": obj(
                    {
                        "type": {"enum": ["RollingUpdate", "Recreate"]},
                        "rollingUpdate": obj({"maxSurge": INT_OR_STRING, "maxUnavailable": INT_OR_STRING}),
                    }
                ),
                "template": obj({"metadata": METADATA, "spec": POD_SPEC}),
            },
            "selector",
            "template",
        ),
    ),
    "k8s Service": resource(
        "Service",
        obj(
            {
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
                "selector": LABELS,
                "ports": array(
                    obj({"name": S, "port": I, "targetPort": INT_OR_STRING, "nodePort": I}, "port"),
                    minItems=1,
                ),
                "clusterIP": {"type": "string", "format": "ipv4"},
            }
        ),
    ),
    "k8s ConfigMap": obj(
        {
            "apiVersion": S,
            "kind": {"const": "ConfigMap"},
            "metadata": METADATA,
            "data": {"type": "object", "additionalProperties": S},
            "immutable": B,
        },
        "kind",
        "metadata",
    ),
    "k8s Pod": resource("Pod", POD_SPEC),
    "k8s Ingress": resource(
        "Ingress",
        obj(
            {
                "ingressClassName": S,
                "tls": array(
                    obj(
                        {
                            "hosts": array({"type": "string", "format": "hostname"}, uniqueItems=True),
                            "secretName": S,
                        }
                    )
                ),
                "rules": array(
                    obj(
                        {
                            "host": {"type": "string", "format": "hostname"},
                            "http": obj(
                                {
                                    "paths": array(
                                        obj(
                                            {
                                                "path": S,
                                                "pathType": {
                                                    "enum": ["Exact", "Prefix", "ImplementationSpecific"]
                                                },
                                                "backend": obj(
                                                    {
                                                        "service": obj(
                                                            {
                                                                "name": S,
                                                                "port": obj(
                                                                    {"number": I, "name": S}, minProperties=1
                                                                ),
                                                            },
                                                            "name",
                                                        )
                                                    }
                                                ),
                                            },
                                            "pathType",
                                            "backend",
                                        )
                                    )
                                },
                                "paths",
                            ),
                        }
                    )
                ),
            }
        ),
    ),
    "k8s CronJob": resource(
        "CronJob",
        obj(
            {
                "schedule": {"type": "string", "pattern": r"^(\S+\s+){4}\S+$"},
                "suspend": B,
                "jobTemplate": obj({"spec": obj({"template": obj({"spec": POD_SPEC})})}),
            },
            "schedule",
            "jobTemplate",
        ),
    ),
    "k8s HorizontalPodAutoscaler": resource(
        "HorizontalPodAutoscaler",
        obj(
            {
                "minReplicas": {"type": "integer", "minimum": 1},
                "maxReplicas": I,
                "metrics": array(
                    obj(
                        {
                            "type": {"enum": ["Resource", "Pods", "External"]},
                            "resource": obj({"name": S, "target": obj({"type": S, "averageUtilization": I})}),
                        },
                        "type",
                    )
                ),
            },
            "maxReplicas",
        ),
    ),
    # -- configuration files ----------------------------------------------------------------------
    "package.json": obj(
        {
            "name": {
                "type": "string",
                "pattern": "^(@[a-z0-9-~][a-z0-9-._~]*/)?[a-z0-9-~][a-z0-9-._~]*$",
                "maxLength": 214,
            },
            "version": S,
            "description": S,
            "keywords": array(S, uniqueItems=True),
            "homepage": {"type": "string", "format": "uri"},
            "license": S,
            "author": {
                "oneOf": [
                    S,
                    obj(
                        {
                            "name": S,
                            "email": {"type": "string", "format": "email"},
                            "url": {"type": "string", "format": "uri"},
                        },
                        "name",
                    ),
                ]
            },
            "scripts": {"type": "object", "additionalProperties": S},
            "dependencies": {"type": "object", "additionalProperties": S},
            "devDependencies": {"type": "object", "additionalProperties": S},
            "engines": {"type": "object", "additionalProperties": S},
            "private": B,
            "workspaces": {"oneOf": [array(S), obj({"packages": array(S)})]},
        },
        "name",
    ),
    "docker-compose": obj(
        {
            "version": S,
            "services": {
                "type": "object",
                "patternProperties": {
                    "^[a-zA-Z0-9._-]+$": obj(
                        {
                            "image": S,
                            "build": {
                                "oneOf": [
                                    S,
                                    obj(
                                        {
                                            "context": S,
                                            "dockerfile": S,
                                            "args": {"type": "object", "additionalProperties": S},
                                        }
                                    ),
                                ]
                            },
                            "ports": array({"oneOf": [S, I]}, uniqueItems=True),
                            "environment": {
                                "oneOf": [
                                    array(S, uniqueItems=True),
                                    {
                                        "type": "object",
                                        "additionalProperties": {
                                            "type": ["string", "number", "boolean", "null"]
                                        },
                                    },
                                ]
                            },
                            "depends_on": array(S, uniqueItems=True),
                            "volumes": array(S),
                            "restart": {"enum": ["no", "always", "on-failure", "unless-stopped"]},
                            "healthcheck": obj(
                                {
                                    "test": {"oneOf": [S, array(S)]},
                                    "interval": S,
                                    "retries": {"type": "number"},
                                }
                            ),
                        },
                        dependencies={"build": {"not": {"required": ["image"]}}},
                    )
                },
                "additionalProperties": False,
            },
            "networks": {"type": "object"},
            "volumes": {"type": "object"},
        },
        "services",
    ),
    "GitHub workflow": obj(
        {
            "name": S,
            "on": {"oneOf": [S, array(S, uniqueItems=True), {"type": "object"}]},
            "env": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
            "jobs": {
                "type": "object",
                "patternProperties": {
                    "^[_a-zA-Z][a-zA-Z0-9_-]*$": obj(
                        {
                            "runs-on": {"oneOf": [S, array(S)]},
                            "needs": {"oneOf": [S, array(S, uniqueItems=True, minItems=1)]},
                            "if": S,
                            "timeout-minutes": N,
                            "strategy": obj(
                                {"matrix": {"type": "object"}, "fail-fast": B, "max-parallel": N}
                            ),
                            "steps": array(
                                obj(
                                    {
                                        "name": S,
                                        "uses": S,
                                        "run": S,
                                        "with": {"type": "object"},
                                        "env": {"type": "object"},
                                    },
                                    dependencies={"with": ["uses"]},
                                ),
                                minItems=1,
                            ),
                        },
                        "runs-on",
                    )
                },
                "minProperties": 1,
                "additionalProperties": False,
            },
        },
        "on",
        "jobs",
    ),
    "pyproject (PEP 621)": obj(
        {
            "project": obj(
                {
                    "name": {"type": "string", "pattern": "^([a-zA-Z\\d]|[a-zA-Z\\d][\\w.-]*[a-zA-Z\\d])$"},
                    "version": S,
                    "requires-python": S,
                    "dependencies": array(S, uniqueItems=True),
                    "optional-dependencies": {"type": "object", "additionalProperties": array(S)},
                    "authors": array(obj({"name": S, "email": {"type": "string", "format": "email"}})),
                    "urls": {"type": "object", "additionalProperties": {"type": "string", "format": "uri"}},
                    "dynamic": array(
                        {"enum": ["version", "description", "readme", "dependencies"]}, uniqueItems=True
                    ),
                },
                "name",
            ),
            "build-system": obj({"requires": array(S), "build-backend": S}, "requires"),
            "tool": {"type": "object"},
        }
    ),
    "tsconfig": obj(
        {
            "extends": {"oneOf": [S, array(S)]},
            "compilerOptions": obj(
                {
                    "target": {"enum": ["es5", "es2015", "es2020", "es2022", "esnext"]},
                    "module": {"enum": ["commonjs", "es2015", "esnext", "node16", "nodenext"]},
                    "strict": B,
                    "paths": {"type": "object", "additionalProperties": array(S, minItems=1)},
                    "lib": array(S, uniqueItems=True),
                    "outDir": S,
                }
            ),
            "include": array(S),
            "exclude": array(S),
        }
    ),
    "eslint config": obj(
        {
            "root": B,
            "extends": {"oneOf": [S, array(S)]},
            "rules": {
                "type": "object",
                "additionalProperties": {
                    "oneOf": [{"enum": [0, 1, 2, "off", "warn", "error"]}, array({}, minItems=1)]
                },
            },
            "env": {"type": "object", "additionalProperties": B},
            "overrides": array(
                obj({"files": {"oneOf": [S, array(S)]}, "rules": {"type": "object"}}, "files")
            ),
        }
    ),
    "renovate config": obj(
        {
            "extends": array(S, uniqueItems=True),
            "schedule": array(S),
            "packageRules": array(
                obj(
                    {
                        "matchPackageNames": array(S),
                        "matchUpdateTypes": array(
                            {"enum": ["major", "minor", "patch", "pin", "digest"]}, uniqueItems=True
                        ),
                        "automerge": B,
                        "groupName": S,
                    },
                    minProperties=1,
                )
            ),
            "timezone": S,
            "prConcurrentLimit": {"type": "integer", "minimum": 0},
        }
    ),
    "OpenAPI info": obj(
        {
            "openapi": {"type": "string", "pattern": "^3\\.[01]\\.\\d+$"},
            "info": obj(
                {
                    "title": S,
                    "version": S,
                    "contact": obj(
                        {
                            "name": S,
                            "url": {"type": "string", "format": "uri-reference"},
                            "email": {"type": "string", "format": "email"},
                        }
                    ),
                    "license": obj(
                        {"name": S, "identifier": S, "url": {"type": "string", "format": "uri"}},
                        "name",
                        dependencies={"identifier": {"not": {"required": ["url"]}}},
                    ),
                },
                "title",
                "version",
            ),
            "servers": array(
                obj({"url": {"type": "string", "format": "uri-reference"}, "description": S}, "url")
            ),
            "paths": {
                "type": "object",
                "patternProperties": {"^/": {"type": "object"}},
                "additionalProperties": False,
            },
        },
        "openapi",
        "info",
    ),
    "logging config (dictConfig)": obj(
        {
            "version": {"const": 1},
            "disable_existing_loggers": B,
            "formatters": {"type": "object", "additionalProperties": obj({"format": S, "datefmt": S})},
            "handlers": {
                "type": "object",
                "additionalProperties": obj(
                    {
                        "class": S,
                        "level": {"enum": ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]},
                        "formatter": S,
                        "filename": S,
                    },
                    "class",
                ),
            },
            "loggers": {
                "type": "object",
                "additionalProperties": obj(
                    {"level": S, "handlers": array(S, uniqueItems=True), "propagate": B}
                ),
            },
        },
        "version",
    ),
    "nginx-like server block": obj(
        {
            "listen": array(
                {"type": "integer", "minimum": 1, "maximum": 65535}, uniqueItems=True, minItems=1
            ),
            "server_name": array({"type": "string", "format": "hostname"}),
            "locations": array(
                obj(
                    {"path": S, "proxy_pass": {"type": "string", "format": "uri"}, "root": S},
                    "path",
                    dependencies={"proxy_pass": {"not": {"required": ["root"]}}},
                )
            ),
            "tls": obj({"certificate": S, "key": S}, "certificate", "key"),
        },
        "listen",
    ),
    # -- data and API payloads -------------------------------------------------------------------
    "GeoJSON Feature": obj(
        {
            "type": {"const": "Feature"},
            "geometry": {
                "oneOf": [
                    obj(
                        {"type": {"const": "Point"}, "coordinates": array(N, minItems=2, maxItems=3)},
                        "type",
                        "coordinates",
                    ),
                    obj(
                        {
                            "type": {"const": "LineString"},
                            "coordinates": array(array(N, minItems=2), minItems=2),
                        },
                        "type",
                        "coordinates",
                    ),
                    obj(
                        {
                            "type": {"const": "Polygon"},
                            "coordinates": array(array(array(N, minItems=2), minItems=4)),
                        },
                        "type",
                        "coordinates",
                    ),
                ]
            },
            "properties": {"type": ["object", "null"]},
            "bbox": array(N, minItems=4),
        },
        "type",
        "geometry",
        "properties",
    ),
    "JSON Feed item": obj(
        {
            "id": S,
            "url": {"type": "string", "format": "uri"},
            "title": S,
            "content_html": S,
            "content_text": S,
            "date_published": {"type": "string", "format": "date-time"},
            "tags": array(S, uniqueItems=True),
            "authors": array(obj({"name": S, "url": {"type": "string", "format": "uri"}}, minProperties=1)),
        },
        "id",
        anyOf=[{"required": ["content_html"]}, {"required": ["content_text"]}],
    ),
    "invoice": obj(
        {
            "number": {"type": "string", "pattern": "^INV-[0-9]{6}$"},
            "issued": {"type": "string", "format": "date"},
            "due": {"type": "string", "format": "date"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "customer": obj(
                {
                    "name": S,
                    "vat_id": S,
                    "address": obj(
                        {
                            "street": S,
                            "city": S,
                            "postcode": S,
                            "country": {"type": "string", "minLength": 2, "maxLength": 2},
                        },
                        "city",
                        "country",
                    ),
                },
                "name",
            ),
            "lines": array(
                obj(
                    {
                        "description": S,
                        "quantity": {"type": "number", "exclusiveMinimum": 0},
                        "unit_price": {"type": "number", "minimum": 0},
                        "tax_rate": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "description",
                    "quantity",
                    "unit_price",
                ),
                minItems=1,
            ),
            "paid": B,
        },
        "number",
        "issued",
        "customer",
        "lines",
        dependencies={"paid": ["due"]},
    ),
    "event (CloudEvents)": obj(
        {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "minLength": 1},
            "source": {"type": "string", "format": "uri-reference"},
            "type": {"type": "string", "minLength": 1},
            "datacontenttype": S,
            "dataschema": {"type": "string", "format": "uri"},
            "time": {"type": "string", "format": "date-time"},
            "data": {},
            "data_base64": {"type": "string", "contentEncoding": "base64"},
        },
        "specversion",
        "id",
        "source",
        "type",
        dependencies={"data_base64": {"not": {"required": ["data"]}}},
    ),
    "user profile": obj(
        {
            "id": {"type": "string", "format": "uuid"},
            "email": {"type": "string", "format": "email"},
            "handle": {"type": "string", "pattern": "^[a-z0-9_]{3,15}$"},
            "birthday": {"type": "string", "format": "date"},
            "website": {"type": "string", "format": "uri"},
            "roles": array({"enum": ["admin", "editor", "viewer"]}, uniqueItems=True, minItems=1),
            "settings": {
                "type": "object",
                "patternProperties": {"^x-": {}},
                "properties": {"theme": {"enum": ["light", "dark"]}},
                "additionalProperties": False,
            },
        },
        "id",
        "email",
        minProperties=2,
    ),
    "recursive tree": TREE,
    "JSON-LD-ish person": {
        "$defs": {
            "thing": obj(
                {
                    "@type": S,
                    "name": S,
                    "sameAs": array({"type": "string", "format": "uri"}, uniqueItems=True),
                }
            ),
            "person": {
                "allOf": [
                    {"$ref": "#/$defs/thing"},
                    obj(
                        {
                            "knows": array({"$ref": "#/$defs/person"}),
                            "birthDate": {"type": "string", "format": "date"},
                        }
                    ),
                ]
            },
        },
        "$ref": "#/$defs/person",
    },
    "expression (recursive oneOf)": {
        "$defs": {
            "expr": {
                "oneOf": [
                    {"type": "number"},
                    obj(
                        {
                            "op": {"enum": ["+", "-", "*", "/"]},
                            "args": array({"$ref": "#/$defs/expr"}, minItems=2, maxItems=2),
                        },
                        "op",
                        "args",
                        additionalProperties=False,
                    ),
                    obj({"var": {"type": "string", "pattern": "^[a-z]$"}}, "var", additionalProperties=False),
                ]
            }
        },
        "$ref": "#/$defs/expr",
    },
    "survey answer": obj(
        {
            "question_id": I,
            "kind": {"enum": ["choice", "scale", "text"]},
            "choices": array(S, uniqueItems=True, maxItems=3),
            "scale": {"type": "integer", "minimum": 1, "maximum": 5},
            "text": {"type": "string", "maxLength": 500},
        },
        "question_id",
        "kind",
        allOf=[
            {"if": {"properties": {"kind": {"const": "choice"}}}, "then": {"required": ["choices"]}},
            {"if": {"properties": {"kind": {"const": "scale"}}}, "then": {"required": ["scale"]}},
        ],
    ),
    "metrics sample": obj(
        {
            "name": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
            "labels": {
                "type": "object",
                "propertyNames": {"pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
                "additionalProperties": S,
            },
            "value": N,
            "timestamp_ms": {"type": "integer", "minimum": 0},
        },
        "name",
        "value",
    ),
    "address book": obj(
        {
            "contacts": array(
                obj(
                    {
                        "name": S,
                        "phones": array(
                            obj(
                                {
                                    "kind": {"enum": ["home", "work", "mobile"]},
                                    "number": {"type": "string", "pattern": "^\\+?[0-9 ()-]{6,20}$"},
                                },
                                "number",
                            ),
                            uniqueItems=True,
                        ),
                        "emails": array({"type": "string", "format": "email"}, uniqueItems=True),
                        "tags": array(S, contains={"const": "favourite"}),
                    },
                    "name",
                )
            )
        },
        "contacts",
    ),
    # -- function-calling tools ------------------------------------------------------------------
    "tool get_weather": tool(
        "Get the weather",
        {
            "city": S,
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
        },
        "city",
    ),
    "tool search_web": tool(
        "Search the web",
        {
            "query": {"type": "string", "minLength": 1},
            "count": {"type": "integer", "minimum": 1, "maximum": 20},
            "site": {"type": "string", "format": "hostname"},
            "freshness": {"enum": ["day", "week", "month"]},
        },
        "query",
    ),
    "tool send_email": tool(
        "Send an email",
        {
            "to": array({"type": "string", "format": "email"}, minItems=1, uniqueItems=True),
            "cc": array({"type": "string", "format": "email"}),
            "subject": {"type": "string", "maxLength": 200},
            "body": S,
            "send_at": {"type": "string", "format": "date-time"},
        },
        "to",
        "subject",
        "body",
    ),
    "tool create_calendar_event": tool(
        "Create an event",
        {
            "title": S,
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
            "attendees": array({"type": "string", "format": "email"}, uniqueItems=True),
            "recurrence": {"oneOf": [{"enum": ["daily", "weekly", "monthly"]}, {"type": "null"}]},
            "location": S,
        },
        "title",
        "start",
        dependencies={"recurrence": ["end"]},
    ),
    "tool run_sql": tool(
        "Run a read-only SQL query",
        {
            "sql": {"type": "string", "pattern": "^\\s*[Ss][Ee][Ll][Ee][Cc][Tt] "},
            "database": {"enum": ["sales", "inventory", "hr"]},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
        "sql",
        "database",
    ),
    "tool book_flight": tool(
        "Book a flight",
        {
            "origin": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "destination": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "date": {"type": "string", "format": "date"},
            "return_date": {"type": "string", "format": "date"},
            "passengers": array(
                obj(
                    {
                        "name": S,
                        "age": {"type": "integer", "minimum": 0},
                        "seat": {"enum": ["window", "aisle", "any"]},
                    },
                    "name",
                ),
                minItems=1,
                maxItems=9,
            ),
            "cabin": {"enum": ["economy", "premium", "business", "first"]},
        },
        "origin",
        "destination",
        "date",
        "passengers",
    ),
    "tool create_issue": tool(
        "Open an issue",
        {
            "repo": {"type": "string", "pattern": "^[\\w.-]+/[\\w.-]+$"},
            "title": S,
            "body": S,
            "labels": array(S, uniqueItems=True),
            "assignees": array(S, uniqueItems=True, maxItems=10),
        },
        "repo",
        "title",
    ),
    "tool resize_image": tool(
        "Resize an image",
        {
            "url": {"type": "string", "format": "uri"},
            "width": {"type": "integer", "minimum": 1},
            "height": {"type": "integer", "minimum": 1},
            "keep_aspect": B,
        },
        "url",
        anyOf=[{"required": ["width"]}, {"required": ["height"]}],
    ),
    "tool set_thermostat": tool(
        "Set a thermostat",
        {
            "room": S,
            "target_c": {"type": "number", "minimum": 5, "maximum": 30, "multipleOf": 0.5},
            "mode": {"enum": ["heat", "cool", "auto", "off"]},
        },
        "room",
        "mode",
    ),
    "tool translate": tool(
        "Translate text",
        {
            "text": {"type": "string", "maxLength": 5000},
            "source": {"type": "string", "pattern": "^[a-z]{2}$"},
            "target": {"type": "string", "pattern": "^[a-z]{2}$"},
            "formality": {"enum": ["formal", "informal"]},
        },
        "text",
        "target",
    ),
    "tool query_knowledge_base": tool(
        "Search documents",
        {
            "query": S,
            "filters": obj(
                {
                    "author": S,
                    "after": {"type": "string", "format": "date"},
                    "tags": array(S, uniqueItems=True),
                },
                minProperties=1,
            ),
            "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
        },
        "query",
    ),
    "tool transfer_money": tool(
        "Transfer money",
        {
            "from_account": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}$"},
            "to_account": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}$"},
            "amount": {"type": "number", "exclusiveMinimum": 0},
            "currency": {"enum": ["EUR", "USD", "GBP"]},
            "reference": {"type": "string", "maxLength": 140},
        },
        "from_account",
        "to_account",
        "amount",
        "currency",
    ),
    "tool plot_chart": tool(
        "Draw a chart",
        {
            "kind": {"enum": ["line", "bar", "pie", "scatter"]},
            "series": array(
                obj({"label": S, "points": array(array(N, minItems=2, maxItems=2), minItems=1)}, "points"),
                minItems=1,
            ),
            "title": S,
            "log_y": B,
        },
        "kind",
        "series",
    ),
    "tool execute_code": tool(
        "Run code in a sandbox",
        {
            "language": {"enum": ["python", "javascript", "bash"]},
            "code": S,
            "timeout_s": {"type": "integer", "minimum": 1, "maximum": 300},
            "files": {
                "type": "object",
                "additionalProperties": {"type": "string", "contentEncoding": "base64"},
            },
        },
        "language",
        "code",
    ),
    "tool order_pizza": tool(
        "Order a pizza",
        {
            "size": {"enum": ["small", "medium", "large"]},
            "toppings": array(
                {"enum": ["cheese", "ham", "mushroom", "olive", "pepper"]}, uniqueItems=True, maxItems=4
            ),
            "delivery": {
                "oneOf": [
                    obj({"address": S}, "address", additionalProperties=False),
                    obj({"pickup": {"const": True}}, "pickup", additionalProperties=False),
                ]
            },
        },
        "size",
        "delivery",
    ),
}
