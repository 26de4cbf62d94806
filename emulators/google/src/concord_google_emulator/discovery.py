"""The discovery documents google-api-python-client ships, as the emulator's contract.

Every request is matched to a discovery method by HTTP method and path, and its parameters are
checked against that method's (names, required, types, enums, patterns): a client that builds a
request the real API would refuse is refused here too, and the refusal is recorded so tests can
assert that none happened. Responses can be checked against the method's response schema.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import googleapiclient  # type: ignore[import-untyped]

__all__ = [
    "API_NAMES",
    "Method",
    "ParameterError",
    "Router",
    "document",
    "schema_violations",
]

# The four APIs the emulator serves, by discovery document name.
API_NAMES = ("calendar.v3", "people.v1", "tasks.v1", "gmail.v1")
_DOCUMENTS = pathlib.Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"


@cache
def document(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((_DOCUMENTS / f"{name}.json").read_text())
    return loaded


class ParameterError(ValueError):
    """A request the API's discovery document does not allow."""


@dataclass(frozen=True)
class Method:
    api: str
    id: str
    http_method: str
    path: str  # relative to the host root, servicePath included
    parameters: Mapping[str, Mapping[str, Any]]
    global_parameters: Mapping[str, Mapping[str, Any]]
    scopes: tuple[str, ...]
    request_schema: str | None
    response_schema: str | None
    regex: re.Pattern[str] = field(repr=False)
    literal_length: int = 0

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        values = {k: v for k, v in found.groupdict().items()}
        for name, value in values.items():
            pattern = self.parameters.get(name, {}).get("pattern")
            if pattern and not re.fullmatch(pattern, value):
                return None
        return values

    def check_query(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        """The query parameters, typed; ParameterError for anything the method does not take."""
        typed: dict[str, Any] = {}
        for name, values in query.items():
            spec = self.parameters.get(name)
            if spec is None or spec.get("location") != "query":
                spec = self.global_parameters.get(name)
            if spec is None:
                raise ParameterError(f"{self.id} takes no parameter {name!r}")
            if len(values) > 1 and not spec.get("repeated"):
                raise ParameterError(f"{self.id}: parameter {name!r} is not repeated")
            converted = [_convert(self.id, name, spec, v) for v in values]
            typed[name] = converted if spec.get("repeated") else converted[0]
        for name, spec in self.parameters.items():
            if spec.get("required") and spec.get("location") == "query" and name not in typed:
                raise ParameterError(f"{self.id}: required parameter {name!r} is missing")
        return typed


def _convert(method: str, name: str, spec: Mapping[str, Any], value: str) -> Any:
    kind = spec.get("type")
    if "enum" in spec and value not in spec["enum"]:
        raise ParameterError(f"{method}: {name}={value!r} is not one of {spec['enum']}")
    if kind == "integer":
        try:
            number = int(value)
        except ValueError:
            raise ParameterError(f"{method}: {name}={value!r} is not an integer") from None
        if "minimum" in spec and number < int(spec["minimum"]):
            raise ParameterError(f"{method}: {name}={value!r} is below {spec['minimum']}")
        if "maximum" in spec and number > int(spec["maximum"]):
            raise ParameterError(f"{method}: {name}={value!r} is above {spec['maximum']}")
        return number
    if kind == "boolean":
        if value not in {"true", "false"}:
            raise ParameterError(f"{method}: {name}={value!r} is not a boolean")
        return value == "true"
    if spec.get("pattern") and not re.fullmatch(spec["pattern"], value):
        raise ParameterError(f"{method}: {name}={value!r} does not match {spec['pattern']}")
    return value


def _template_regex(template: str) -> tuple[re.Pattern[str], int]:
    parts: list[str] = []
    literal = 0
    for piece in re.split(r"(\{\+?[^}]+\})", template):
        if piece.startswith("{+"):
            parts.append(f"(?P<{_group(piece[2:-1])}>.+?)")
        elif piece.startswith("{"):
            parts.append(f"(?P<{_group(piece[1:-1])}>[^/]+)")
        else:
            literal += len(piece)
            parts.append(re.escape(piece))
    return re.compile("".join(parts)), literal


def _group(name: str) -> str:
    if not name.isidentifier():
        raise ValueError(f"path parameter {name!r} is not a group name")
    return name


def _methods(api: str) -> Iterator[Method]:
    doc = document(api)
    service_path = doc["servicePath"]

    def walk(resource: Mapping[str, Any]) -> Iterator[Method]:
        for spec in resource.get("methods", {}).values():
            path = service_path + spec["path"]
            regex, literal = _template_regex(path)
            yield Method(
                api=api,
                id=spec["id"],
                http_method=spec["httpMethod"],
                path=path,
                parameters=spec.get("parameters", {}),
                global_parameters=doc["parameters"],
                scopes=tuple(spec.get("scopes", ())),
                request_schema=spec.get("request", {}).get("$ref"),
                response_schema=spec.get("response", {}).get("$ref"),
                regex=regex,
                literal_length=literal,
            )
        for child in resource.get("resources", {}).values():
            yield from walk(child)

    yield from walk(doc)


class Router:
    """Finds the discovery method a request is for (the most literal path template wins)."""

    def __init__(self, apis: tuple[str, ...] = API_NAMES) -> None:
        methods = [m for api in apis for m in _methods(api)]
        self._methods = sorted(methods, key=lambda m: -m.literal_length)
        self.by_id = {m.id: m for m in methods}

    def route(self, http_method: str, path: str) -> tuple[Method, dict[str, str]] | None:
        for method in self._methods:
            if method.http_method != http_method:
                continue
            values = method.match(path)
            if values is not None:
                return method, values
        return None

    def batch_paths(self) -> set[str]:
        return {document(api)["batchPath"] for api in {m.api for m in self.by_id.values()}}


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
}


def schema_violations(api: str, schema: str, value: Any) -> list[str]:
    """Where `value` departs from the discovery schema `schema` of `api`: unknown properties,
    wrong JSON types, enum values not listed. An empty list means it conforms."""
    schemas = document(api)["schemas"]
    problems: list[str] = []

    def check(spec: Mapping[str, Any], node: Any, where: str) -> None:
        if "$ref" in spec:
            spec = schemas[spec["$ref"]]
        kind = spec.get("type", "object")
        if kind == "any":
            return
        # int64 and uint64 travel as strings in Google's JSON.
        if kind == "string" or spec.get("format") in {"int64", "uint64"}:
            allowed: tuple[type, ...] = (str,)
        else:
            allowed = _JSON_TYPES[kind]
        if not isinstance(node, allowed) or (isinstance(node, bool) and bool not in allowed):
            problems.append(f"{where}: {type(node).__name__} where {kind} is expected")
            return
        if "enum" in spec and node not in spec["enum"]:
            problems.append(f"{where}: {node!r} is not one of the enum's values")
        if isinstance(node, list):
            for n, item in enumerate(node):
                check(spec.get("items", {}), item, f"{where}[{n}]")
        elif isinstance(node, dict):
            properties = spec.get("properties", {})
            extra = spec.get("additionalProperties")
            for key, item in node.items():
                if key in properties:
                    check(properties[key], item, f"{where}.{key}")
                elif extra is not None:
                    check(extra, item, f"{where}.{key}")
                else:
                    problems.append(f"{where}.{key}: not a property of the schema")

    check({"$ref": schema}, value, schema)
    return problems
