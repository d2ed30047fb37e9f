"""The spec's own OpenAPI definitions (../shared/matrix-spec-api), used to check that
requests and responses in tests have the shapes the spec gives.

Every file's paths are prefixed with its `basePath`; `$ref`s resolve relative to the
file that holds them, so each file is registered as a JSON Schema resource under its
own file:// URI and schemas are referenced by JSON pointer into it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_ROOT = Path(__file__).resolve().parents[2] / "shared" / "matrix-spec-api" / "data" / "api" / "client-server"


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    file_uri: str
    pointer: str  # JSON pointer of the operation inside its file


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@functools.cache
def _load(uri: str) -> Any:
    return yaml.safe_load(Path(urlparse(uri).path).read_text())


def _retrieve(uri: str) -> Resource[Any]:
    return Resource.from_contents(_load(uri), default_specification=DRAFT202012)


@functools.cache
def _registry() -> Registry[Any]:
    return Registry(retrieve=_retrieve)  # type: ignore[call-arg]


@functools.cache
def operations() -> list[Operation]:
    found: list[Operation] = []
    for file in sorted(SPEC_ROOT.glob("*.yaml")):
        doc = _load(file.as_uri())
        if not isinstance(doc, dict) or "paths" not in doc:
            continue
        base = doc.get("servers", [{}])[0].get("variables", {}).get("basePath", {}).get("default", "")
        for path, item in doc["paths"].items():
            for method, op in item.items():
                if method not in ("get", "put", "post", "delete"):
                    continue
                # The spec writes the user-ID invite as "/rooms/{roomId}/invite " (trailing
                # space) to tell it apart from the third-party invite at the same path.
                template = base + path.strip()
                regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
                pointer = f"/paths/{_escape(path)}/{method}"
                found.append(Operation(method.upper(), template, re.compile(regex), file.as_uri(), pointer))
    # Literal path segments win over parameters: /devices/{id} must not swallow a
    # fixed path of the same length.
    found.sort(key=lambda op: op.template.count("{"))
    return found


def find_operations(method: str, path: str) -> list[Operation]:
    """The most specific operations for this request: usually one, but the spec defines
    some paths twice (POST /rooms/{roomId}/invite invites a user ID or a third party)."""
    matches = [op for op in operations() if op.method == method and op.pattern.match(path)]
    if not matches:
        return []
    fewest = matches[0].template.count("{")
    return [op for op in matches if op.template.count("{") == fewest]


def _resolve_pointer(doc: Any, pointer: str) -> Any:
    node = doc
    for token in pointer.strip("/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def _validator(op: Operation, sub_pointer: str) -> Draft202012Validator | None:
    try:
        _resolve_pointer(_load(op.file_uri), op.pointer + sub_pointer)
    except (KeyError, TypeError):
        return None
    schema = {"$ref": f"{op.file_uri}#{op.pointer}{sub_pointer}"}
    return Draft202012Validator(schema, registry=_registry())


class SpecMismatch(AssertionError):
    pass


def _without_nulls(value: Any) -> Any:
    # Servers send null for an absent optional field (Synapse does, and matrix-nio even
    # requires it for devices); the spec's schemas say "absent". Treat the two alike.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _check(method: str, path: str, sub_pointer: str, body: Any, what: str) -> bool:
    """Raise SpecMismatch unless `body` fits one of the schemas the spec gives here.

    Returns whether a schema was found and checked.
    """
    validators = [v for op in find_operations(method, path) if (v := _validator(op, sub_pointer)) is not None]
    if not validators:
        return False
    first_error = None
    for validator in validators:
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        if not errors:
            return True
        first_error = first_error or errors[0]
    assert first_error is not None
    raise SpecMismatch(f"{what}: {first_error.message} at {list(first_error.path)}")


def check_response(method: str, path: str, status: int, body: Any) -> bool:
    sub_pointer = f"/responses/{status}/content/application~1json/schema"
    return _check(method, path, sub_pointer, _without_nulls(body), f"{method} {path} -> {status}")


def check_request(method: str, path: str, body: Any) -> bool:
    return _check(method, path, "/requestBody/content/application~1json/schema", body, f"request {method} {path}")
