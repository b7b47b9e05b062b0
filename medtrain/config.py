"""Typed configs: YAML files and `k=v` overrides -> dataclasses, with errors that name the fix.

Each job declares its schema as a dataclass beside the code it configures (for example
`medtrain.data.pack.PrepareConfig`). This module only knows how to fill such a dataclass:

    cfg = load_config(PrepareConfig, "prepare.yaml", ["seq_len=256", "corpora.0.weight=2"])

- An unknown key is an error that lists the closest valid keys.
- A value of the wrong type is an error naming the key, the expected type and the file:line.
- A dataclass may validate itself in `__post_init__` by raising `ValueError`; the message becomes a
  `UserError` pointing at the config file.
- `save_resolved(cfg, run_dir)` writes `config.yaml`, so a result can be traced to what produced it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from medtrain.errors import UserError
from medtrain.io import write_yaml_atomic

T = TypeVar("T")

PACKAGED_CONFIGS = Path(__file__).parent / "configs"


# ----------------------------------------------------------------------------- reading YAML with lines


def _node_to_python(node: yaml.Node, prefix: str, lines: dict[str, int]) -> Any:
    """Turn a composed YAML node into plain Python, recording the line of every dotted key."""
    lines[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(yaml.safe_load(yaml.serialize(key_node)))
            out[key] = _node_to_python(value_node, f"{prefix}.{key}" if prefix else key, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _node_to_python(item, f"{prefix}.{i}" if prefix else str(i), lines) for i, item in enumerate(node.value)
        ]
    return yaml.safe_load(yaml.serialize(node))


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Read a YAML mapping and a {dotted.key: line} index into it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("config file not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config ({exc.__class__.__name__})", path) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"invalid YAML: {problem}", path, None if mark is None else mark.line + 1) from None
    lines: dict[str, int] = {}
    if node is None:
        return {}, lines
    data = _node_to_python(node, "", lines)
    if not isinstance(data, dict):
        raise UserError("a config must be a mapping of keys to values", path, 1)
    return data, lines


def resolve_config_path(name: str | Path) -> Path:
    """A path as given, or else the name of a packaged recipe in `medtrain/configs/` (with or without .yaml)."""
    path = Path(name)
    if path.exists():
        return path
    for candidate in (PACKAGED_CONFIGS / f"{name}.yaml", PACKAGED_CONFIGS / str(name)):
        if candidate.is_file():
            return candidate
    packaged = sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))
    raise UserError(f"config file not found (packaged recipes: {', '.join(packaged) or 'none'})", path)


# ----------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override {text!r} must look like dotted.key=value, e.g. train.lr=3e-5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set a dotted key in nested dicts/lists, creating dicts on the way (the schema checks them later)."""
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, key, keys[: i + 1])]
            continue
        if not isinstance(node.get(key), (dict, list)):
            node[key] = {}
        node = node[key]
    last = keys[-1]
    if isinstance(node, list):
        node[_list_index(node, last, keys)] = value
    else:
        node[last] = value


def _list_index(items: list[Any], key: str, keys: list[str]) -> int:
    if not key.isdigit() or int(key) >= len(items):
        raise UserError(f"override {'.'.join(keys)}: {key!r} is not an index of a {len(items)}-item list")
    return int(key)


# ----------------------------------------------------------------------------- building dataclasses


class _Builder:
    """Fills a dataclass from plain data, tracking where each value came from for error messages."""

    def __init__(self, source: Path | None, lines: dict[str, int]):
        self.source = source
        self.lines = lines

    def error(self, key: str, message: str, named: bool = False) -> UserError:
        """An error at `key`'s line; `named`: the message already names the key."""
        line = self.lines.get(key)
        where = f"{key}: " if key and not named else ""
        if self.source is None:
            return UserError(f"{where}{message}")
        # An override has no line in the file; say so rather than pointing at the wrong place.
        return UserError(f"{where}{message}", self.source, line)

    def build(self, cls: type[T], data: Any, prefix: str = "") -> T:
        if not isinstance(data, dict):
            raise self.error(prefix, f"expected a mapping of {cls.__name__} fields, got {_describe(data)}")
        hints = typing.get_type_hints(cls)
        fields = {config_key(f): f for f in dataclasses.fields(cls) if f.init}
        for key in data:
            if key not in fields:
                raise self.error(_join(prefix, str(key)), unknown_key_message(str(key), list(fields)))
        kwargs: dict[str, Any] = {}
        for name, field in fields.items():
            key = _join(prefix, name)
            if name in data:
                kwargs[field.name] = self.convert(hints[field.name], data[name], key)
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise self.error(key, "is required but missing")
        try:
            return cls(**kwargs)
        except ValueError as exc:
            message = str(exc)  # a message that already names its dotted key needs no prefix, and points at its line
            named = message.split(":", 1)[0]
            if named in self.lines and named.startswith(f"{prefix}." if prefix else ""):
                raise self.error(named, message, named=True) from None
            raise self.error(prefix, message, named=message.startswith(f"{prefix}.")) from None

    def convert(self, tp: Any, value: Any, key: str) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if tp is Any:
            return value
        if origin in (Union, types.UnionType):
            return self._convert_union(args, value, key)
        if origin is typing.Literal:
            if value not in args:
                raise self.error(key, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
            return value
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, key)
        if origin is list:
            if not isinstance(value, list):
                raise self.error(key, f"expected a list, got {_describe(value)}")
            return [self.convert(args[0], item, f"{key}.{i}") for i, item in enumerate(value)]
        if origin is dict:
            if not isinstance(value, dict):
                raise self.error(key, f"expected a mapping, got {_describe(value)}")
            return {str(k): self.convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
        return self._convert_scalar(tp, value, key)

    def _convert_union(self, args: tuple[Any, ...], value: Any, key: str) -> Any:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return self.convert(arg, value, key)
            except UserError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise self.error(key, f"expected {names}, got {_describe(value)}")

    def _convert_scalar(self, tp: Any, value: Any, key: str) -> Any:
        if tp is bool:
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):  # YAML 1.1 reads 5e-5 (no dot) as a string
                try:
                    return float(value)
                except ValueError:
                    pass
        elif tp is str:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
        elif tp is Path:
            if isinstance(value, str) and value:
                return Path(value)
        else:
            raise TypeError(f"config type {tp!r} is not supported")  # a bug in a schema, not user input
        raise self.error(key, f"expected {_type_name(tp)}, got {_describe(value)}")


def config_key(field: dataclasses.Field) -> str:
    """The key a field has in YAML: its name, or `metadata={"key": ...}` where the word is reserved in Python
    (a staged variant's `from:`)."""
    return field.metadata.get("key", field.name)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _type_name(tp: Any) -> str:
    if tp is Path:
        return "a path"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _describe(value: Any) -> str:
    """Name a value's type without echoing long user text."""
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 40 else "a long string"
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def unknown_key_message(key: str, valid: Iterable[str], what: str = "key") -> str:
    """The one "unknown key, did you mean" wording: closest names first, then every valid name."""
    names = sorted(valid)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"unknown {what}; {hint}valid {what}s: {', '.join(names)}"


# ----------------------------------------------------------------------------- public API


def build_config(cls: type[T], data: dict[str, Any], source: Path | None = None,
                 lines: dict[str, int] | None = None) -> T:
    """Fill dataclass `cls` from a plain mapping (e.g. one already loaded), checking keys and types."""
    return _Builder(source, lines or {}).build(cls, data)


def load_config(cls: type[T], path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Read YAML at `path` (or a packaged recipe name), apply `k=v` overrides, and build `cls`."""
    source = resolve_config_path(path)
    data, lines = read_yaml(source)
    for override in overrides:
        keys, value = parse_override(override)
        apply_override(data, keys, value)
        lines[".".join(keys)] = 0  # marks "from the command line"
    builder = _Builder(source, {k: v for k, v in lines.items() if v})
    return builder.build(cls, data)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML-safe data (paths as strings)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {config_key(f): plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


def save_resolved(cfg: Any, run_dir: str | Path) -> Path:
    """Write the resolved config as `run_dir/config.yaml` (atomically) and return its path."""
    path = Path(run_dir) / "config.yaml"
    write_yaml_atomic(path, config_to_dict(cfg))
    return path


def path_or_mapping(cls: type[T], value: Any, key: str) -> Path | T:
    """A path stays a path; a mapping becomes `cls`, its errors naming `key` (a union type would report only
    "expected a path or a mapping")."""
    if isinstance(value, (Path, cls)):
        return value
    if isinstance(value, str) and value:
        return Path(value)
    if isinstance(value, dict):
        try:
            return build_config(cls, value)
        except UserError as exc:
            raise ValueError(f"{key}.{exc.message}") from None  # the message starts with the wrong key
    raise ValueError(f"{key}: expected a path or a mapping {{path: ..., format: ...}}")
