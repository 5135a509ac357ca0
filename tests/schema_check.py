"""A validator for the subset of JSON Schema (2020-12) that ``tests/report.schema.json`` uses.

No dependency for one schema: a keyword outside the subset is an error here, so
the schema cannot quietly rely on one this does not check.
"""

from __future__ import annotations

import re
from typing import Any

#: keywords that only describe
_NOTES = {"$schema", "$id", "title", "description", "$defs"}
_CHECKED = {"$ref", "type", "const", "enum", "required", "properties", "additionalProperties", "items", "minItems",
            "minimum", "maximum", "pattern"}
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def errors(instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None, path: str = "$") -> list[str]:
    """Every way ``instance`` breaks ``schema``, as ``path: what`` lines (empty: valid)."""
    root = root if root is not None else schema
    unknown = set(schema) - _NOTES - _CHECKED
    if unknown:
        raise ValueError(f"{path}: schema keywords this validator does not check: {sorted(unknown)}")
    found: list[str] = []
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"{path}: only local $refs: {ref}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        found += errors(instance, target, root, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](instance) for t in types):
            return found + [f"{path}: {instance!r} is not of type {'/'.join(types)}"]
    if "const" in schema and instance != schema["const"]:
        found.append(f"{path}: {instance!r} is not {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        found.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            if key not in instance:
                found.append(f"{path}: '{key}' is missing")
        properties = schema.get("properties", {})
        for key, value in instance.items():
            if key in properties:
                found += errors(value, properties[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties", True) is False:
                found.append(f"{path}: '{key}' is not allowed")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            found.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(instance):
                found += errors(item, schema["items"], root, f"{path}[{i}]")
    if _TYPES["number"](instance):
        if "minimum" in schema and instance < schema["minimum"]:
            found.append(f"{path}: {instance} < {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            found.append(f"{path}: {instance} > {schema['maximum']}")
    if isinstance(instance, str) and "pattern" in schema and not re.search(schema["pattern"], instance):
        found.append(f"{path}: {instance!r} does not match {schema['pattern']}")
    return found
