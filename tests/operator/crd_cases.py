"""Manifests derived from the CRD's schema, for checking that the schema and policy.py agree.

`mutations(base)` walks crds/trafficpolicy.yaml's openAPIV3Schema alongside a full manifest and,
for every field the manifest has, produces the manifest with that field broken in each way its
schema constrains (wrong type, below a minimum, above a maximum, outside an enum, not matching a
pattern, too short or long, a list too short or long, a required field removed), plus values just
inside the bounds and optional fields removed. Each case is (label, manifest).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "trafficpolicy.yaml"
EXAMPLES = sorted((ROOT / "examples" / "policies").glob("*.yaml"))


def crd() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return doc


def spec_schema() -> dict[str, Any]:
    version = crd()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


Path_ = tuple[str | int, ...]


def _set(doc: Any, path: Path_, value: Any) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


def _delete(doc: Any, path: Path_) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    return out


def _label(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


BAD_STRINGS = ["Bad_Value!", " spaced", "UPPER", "-lead", "trail-", "", "x" * 2100]


def _string_cases(schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    yield "int", 12345
    if "enum" in schema:
        yield "enum", "bogus"
        for v in schema["enum"]:
            yield f"enum-ok-{v}", v
        return
    if "pattern" in schema or "minLength" in schema or "maxLength" in schema:
        for i, s in enumerate(BAD_STRINGS):
            yield f"str{i}", s
    if "maxLength" in schema:
        yield "long", "a" * (schema["maxLength"] + 1)
        yield "longest", "a" * schema["maxLength"]
        if schema.get("pattern", "").startswith("^/"):
            yield "long-path", "/" + "a" * schema["maxLength"]
    if "pattern" in schema and "[0-9]{1,6}h" in schema["pattern"]:
        for d in ["4s", "5s", "29s", "30s", "1m", "1h30m5s", "30", "1.5s", "5 s", "1d", "1m1h"]:
            yield f"duration-{d}", d


def _number_cases(schema: dict[str, Any], integer: bool) -> Iterator[tuple[str, Any]]:
    yield "str", "1"
    yield "bool", True
    if integer:
        yield "frac", 1.5
    step = 1 if integer else 0.001
    if "minimum" in schema:
        m = schema["minimum"]
        yield "below-min", m - step
        yield "at-min", m
        yield "above-min", m + step
    if "maximum" in schema:
        m = schema["maximum"]
        yield "above-max", m + step
        yield "at-max", m
        yield "below-max", m - step


def mutations(base: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    schema = spec_schema()["properties"]["spec"]
    yield from _walk(base, ("spec",), schema)


def _walk(base: Any, path: Path_, schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    node: Any = base
    for p in path:
        node = node[p]
    label = _label(path)
    kind = schema.get("type")
    if kind == "object":
        yield f"{label}:list", _set(base, path, [1])
        props = schema.get("properties", {})
        for key in props:
            if key in node:
                if key in schema.get("required", []):
                    yield f"{label}.{key}:missing", _delete(base, (*path, key))
                else:
                    yield f"{label}.{key}:absent", _delete(base, (*path, key))
                yield from _walk(base, (*path, key), props[key])
        if "minProperties" in schema:
            yield f"{label}:empty", _set(base, path, {})
    elif kind == "array":
        yield f"{label}:object", _set(base, path, {"a": 1})
        if "minItems" in schema:
            yield f"{label}:empty", _set(base, path, [])
        if "maxItems" in schema and node:
            n = schema["maxItems"] + 1
            yield f"{label}:too-many", _set(base, path, _many(node[0], n))
            yield f"{label}:most", _set(base, path, _many(node[0], n - 1))
        if schema.get("x-kubernetes-list-type") == "map" and node:
            yield f"{label}:duplicate", _set(base, path, [*node, copy.deepcopy(node[0])])
        if node:
            yield from _walk(base, (*path, 0), schema["items"])
    elif kind == "string":
        for tag, v in _string_cases(schema):
            yield f"{label}:{tag}", _set(base, path, v)
    elif kind in ("number", "integer"):
        for tag, v in _number_cases(schema, kind == "integer"):
            yield f"{label}:{tag}", _set(base, path, v)
    elif kind == "boolean":
        yield f"{label}:str", _set(base, path, "true")
        yield f"{label}:flip", _set(base, path, not node)


def _many(item: Any, n: int) -> list[Any]:
    """n copies of a list item, unique by name (list-map keys) where it has one."""
    out = []
    for i in range(n):
        x = copy.deepcopy(item)
        if isinstance(x, dict) and "name" in x:
            x["name"] = f"n{i}"
        if isinstance(x, dict) and "from" in x:
            x["from"], x["to"] = f"f{i}", f"t{i}"
        out.append(x)
    return out


def _list_map_keys(
    validator: Any, keys: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """`x-kubernetes-list-map-keys`: no two items share their keys (the API server checks it)."""
    if not isinstance(instance, list):
        return
    seen = set()
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(repr(item.get(k)) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(f"[{i}]: duplicate value {key}")
        seen.add(key)


SchemaValidator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft4Validator, {"x-kubernetes-list-map-keys": _list_map_keys}
)
"""OpenAPI v3.0 numbers use draft 4's boolean exclusiveMinimum/Maximum; plus the list-map rule."""


def schema_errors(manifest: Any) -> list[str]:
    v = SchemaValidator(spec_schema())
    return [f"{_label(tuple(e.absolute_path))}: {e.message}" for e in v.iter_errors(manifest)]


def full_manifest() -> dict[str, Any]:
    """A manifest with every spec field set (the base the mutations break)."""
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "policies" / "shop.yaml").read_text())
    return doc
