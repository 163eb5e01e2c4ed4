"""Reading the user's input files: every failure becomes one InputError naming the file.

Whatever the bytes, reading is bounded: at most `MAX_FILE_BYTES`, strict UTF-8, nesting at most
`MAX_DEPTH` levels, at most `MAX_NODES` values once YAML aliases are expanded (so an alias bomb is
refused before anything walks it), no recursive aliases, no duplicate mapping keys (YAML or JSON),
no number literal longer than Python converts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from slate.model.errors import InputError, quote

T = TypeVar("T")

MAX_FILE_BYTES = 1_000_000
"""Input files larger than this are refused (a 30-cluster, 300-service scenario is 0.36 MB)."""
MAX_DEPTH = 32
"""Deepest nesting of mappings/lists accepted (scenarios need 7)."""
MAX_NODES = 500_000
"""Most values a YAML document may expand to, aliases counted at every use."""

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_Loader):  # type: ignore[valid-type,misc]
    """The safe loader, refusing duplicate keys in a mapping (YAML says keys are unique)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if isinstance(key_node, yaml.ScalarNode):  # the common case, without constructing
                key: Any = key_node.value
                ident: Any = (key_node.tag, key)
            else:
                key = ident = self.construct_object(key_node, deep=True)
            try:
                duplicate = ident in seen
            except TypeError:  # unhashable: the base class reports it
                break
            if duplicate:
                mark = key_node.start_mark
                raise InputError(
                    "",
                    f"not valid YAML: duplicate key {quote(key)} at line {mark.line + 1}, "
                    f"column {mark.column + 1}",
                )
            seen.add(ident)
        result: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return result


# YAML 1.1 reads `1e-3` and `2.5e6` as strings (its floats need a dot and a signed exponent);
# YAML 1.2 and JSON read them as numbers, as users expect.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _where(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _check_yaml_events(text: str) -> None:
    """Depth, size-after-alias-expansion and recursive aliases, from the event stream.

    The event parser is iterative, so this is safe on any input; the composer and constructor
    (recursive) only run on documents that pass.
    """
    sizes: dict[str, int] = {}  # anchor -> expanded size of its node
    stack: list[tuple[str | None, int]] = []  # open collections: (anchor, total at their start)
    total = 0  # values so far, aliases expanded

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.ScalarEvent):
            total += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise InputError(
                    "", f"nested deeper than {MAX_DEPTH} levels{_where(event.start_mark)}"
                )
            if event.anchor:
                sizes.pop(event.anchor, None)  # a redefined anchor: aliases inside are recursive
            stack.append((event.anchor, total))
            total += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, start = stack.pop()
            if anchor:
                sizes[anchor] = total - start
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes and any(a == event.anchor for a, _ in stack):
                raise InputError(
                    "", f"not valid here: a recursive YAML alias{_where(event.start_mark)}"
                )
            total += sizes.get(event.anchor or "", 1)
        else:
            continue
        if total > MAX_NODES:
            raise InputError(
                "",
                f"expands to more than {MAX_NODES} values (YAML aliases?)"
                f"{_where(event.start_mark)}",
            )


def _yaml(text: str) -> Any:
    try:
        _check_yaml_events(text)
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        problem = (
            getattr(e, "problem", None)
            or getattr(e, "reason", None)
            or str(e).splitlines()[0]
            or "cannot parse"
        )
        raise InputError(
            "", f"not valid YAML: {problem}{_where(getattr(e, 'problem_mark', None))}"
        ) from None


def _depth_ok(data: Any) -> bool:
    """Whether `data` nests at most MAX_DEPTH levels (iterative: safe on any value)."""
    todo = [(data, 0)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict | list):
            if depth >= MAX_DEPTH:
                return False
            children = node.values() if isinstance(node, dict) else node
            todo.extend((c, depth + 1) for c in children)
    return True


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise InputError("", f"not valid JSON: duplicate key {quote(k)}")
        out[k] = v
    return out


def _json(text: str) -> Any:
    try:
        data = json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError as e:
        raise InputError("", f"not valid JSON: {e.msg} at line {e.lineno}") from None
    except RecursionError:
        raise InputError("", f"nested deeper than {MAX_DEPTH} levels") from None
    if not _depth_ok(data):
        raise InputError("", f"nested deeper than {MAX_DEPTH} levels")
    return data


def parse_text(text: str, fmt: Literal["yaml", "json"]) -> Any:
    """The document in `text`; InputError (without a source) if it is not valid `fmt`."""
    try:
        return _json(text) if fmt == "json" else _yaml(text)
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        # e.g. an integer literal of more than 4300 digits
        raise InputError("", f"not valid {fmt.upper()}: {quote(str(e), 80)}") from None


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of the file at `path`, at most MAX_FILE_BYTES; InputError naming it."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise InputError("", f"cannot read {what}: {e.strerror}", source=source) from None
    if len(raw) > MAX_FILE_BYTES:
        raise InputError(
            "",
            f"{what} is larger than the limit of {MAX_FILE_BYTES / 1e6:g} MB",
            source=source,
        )
    try:
        return decode(raw)
    except InputError as e:
        raise e.with_source(source) from None


def decode(raw: bytes) -> str:
    """UTF-8 bytes (a BOM allowed) as text; InputError naming the first bad byte's line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputError("", f"not valid UTF-8: byte 0x{raw[e.start]:02x} at line {line}") from None


def read_document(path: str | Path, what: str, fmt: Literal["yaml", "json"]) -> Any:
    """The parsed YAML or JSON document at `path` (`what` names the file kind in errors)."""
    text = read_text(path, what)
    try:
        return parse_text(text, fmt)
    except InputError as e:
        raise e.with_source(str(path)) from None


def load_document(
    path: str | Path, what: str, fmt: Literal["yaml", "json"], parse: Callable[[Any], T]
) -> T:
    """`parse` the document at `path`, with the file named in any InputError it raises."""
    data = read_document(path, what, fmt)
    try:
        return parse(data)
    except InputError as e:
        raise e.with_source(str(path)) from None


def warn_with_source(
    path: str | Path, warn: Callable[[InputError], None] | None
) -> Callable[[InputError], None]:
    """A `warn` callback for a parser of the file at `path`: the warning names the file."""
    source = str(path)

    def warn_file(e: InputError) -> None:
        if warn:
            warn(e.with_source(source))

    return warn_file
