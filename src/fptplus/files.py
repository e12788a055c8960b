"""Reading and writing the small files fptplus keeps (JSON records, run metadata) safely.

Every file the tool writes and later reads back goes through `read_json` + `check_schema`, so a damaged,
truncated, re-encoded or hand-edited file is a one-line error that names the file and the fix, never a
traceback. Writes are atomic (temp file, fsync, rename) with a temp name unique to the writing process.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import FPTPlusError

# A schema maps a key to the type(s) its value must have; a nested Mapping is a nested schema.
Schema = Mapping[str, Any]


def cache_dir() -> Path:
    """$FPTPLUS_CACHE, else $XDG_CACHE_HOME/fptplus, else ~/.cache/fptplus (built-in weights, demo data, the record
    of verified store shards)."""
    if os.environ.get("FPTPLUS_CACHE"):
        return Path(os.environ["FPTPLUS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fptplus"


def display(path: str | os.PathLike) -> str:
    """`path` as printable text, even when the file name is not valid UTF-8 (bad bytes shown as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; sizes below 1 GiB never print as '0.00 GiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GiB" else f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def read_json(path: str | Path, error: type[FPTPlusError] = FPTPlusError, fix: str = "") -> Any:
    """Parses a JSON file; any problem (missing, unreadable, not UTF-8, not JSON) raises `error` naming the file."""
    path = Path(path)
    suffix = f"; {fix}" if fix else ""
    try:
        text = path.read_bytes().decode("utf-8")
        return json.loads(text)
    except FileNotFoundError:
        raise error(f"{display(path)} is missing{suffix}") from None
    except OSError as err:
        raise error(f"cannot read {display(path)} ({err.strerror or err}){suffix}") from None
    except UnicodeDecodeError as err:
        raise error(f"{display(path)} is damaged: not UTF-8 text (byte {err.start}){suffix}") from None
    except json.JSONDecodeError as err:
        raise error(f"{display(path)} is damaged: not valid JSON ({err.msg}, line {err.lineno}){suffix}") from None


def check_schema(obj: Any, schema: Schema, path: str | Path, error: type[FPTPlusError], fix: str = "") -> Any:
    """Checks that `obj` is a mapping holding every key of `schema` with a value of the right type."""
    problem = _schema_problem(obj, schema, "")
    if problem:
        suffix = f"; {fix}" if fix else ""
        raise error(f"{display(path)} is damaged: {problem}{suffix}")
    return obj


def read_json_schema(path: str | Path, schema: Schema, error: type[FPTPlusError], fix: str = "") -> Any:
    """`read_json` followed by `check_schema`."""
    return check_schema(read_json(path, error, fix), schema, path, error, fix)


def _type_name(t: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
             bool: "true/false", type(None): "null"}  # fmt: skip
    kinds = t if isinstance(t, tuple) else (t,)
    return " or ".join(names.get(k, getattr(k, "__name__", str(k))) for k in kinds)


def _is(value: Any, t: Any) -> bool:
    kinds = t if isinstance(t, tuple) else (t,)
    for k in kinds:
        if k is int and isinstance(value, bool):
            continue  # JSON true is not a count
        if k is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if isinstance(value, k):
            return True
    return False


def _schema_problem(obj: Any, schema: Schema, where: str) -> str | None:
    if not isinstance(obj, Mapping):
        return f"{where or 'the file'} should be an object, found {type(obj).__name__}"
    for key, t in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in obj:
            return f"missing key {name!r}"
        if isinstance(t, Mapping):
            problem = _schema_problem(obj[key], t, name)
            if problem:
                return problem
        elif not _is(obj[key], t):
            return f"{name!r} should be {_type_name(t)}, found {type(obj[key]).__name__}"
    return None


def check_records(
    rows: Any, schema: Schema, what: str, path: str | Path, error: type[FPTPlusError], fix: str = ""
) -> list:
    """Checks a list of objects (e.g. a manifest's samples) against one schema."""
    suffix = f"; {fix}" if fix else ""
    if not isinstance(rows, list):
        raise error(f"{display(path)} is damaged: {what!r} should be a list{suffix}")
    for i, row in enumerate(rows):
        problem = _schema_problem(row, schema, f"{what}[{i}]")
        if problem:
            raise error(f"{display(path)} is damaged: {problem}{suffix}")
    return rows


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Writes JSON to a temp file unique to this process, fsyncs it and renames it over `path`.

    Readers never see half a file, and two processes writing the same path never share a temp file.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


MAX_YAML_VALUES = 100_000  # a config or plan is a few hundred values; anchors repeated into more are refused


def load_yaml(text: str, where: str, error: type[FPTPlusError] = FPTPlusError) -> Any:
    """`yaml.safe_load` that refuses a mapping with a key twice (YAML keeps the last one silently) and a document
    whose anchors and aliases expand to more than `MAX_YAML_VALUES` values (a "billion laughs" file: a few hundred
    bytes that grow to gigabytes when walked), naming `where`."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise error(f"{where}: the key {key!r} appears twice (lines {seen[key]} and "
                            f"{key_node.start_mark.line + 1}); keep one")  # fmt: skip
            seen[key] = key_node.start_mark.line + 1
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    obj = yaml.load(text, Loader=Loader)
    count, stack = 0, [obj]
    while stack:  # every value as it would be walked: shared (aliased) objects counted each time they appear
        item = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise error(f"{where} expands to more than {MAX_YAML_VALUES:,} values (YAML anchors and aliases repeated "
                        "into each other); write the values out")  # fmt: skip
        if isinstance(item, dict):
            stack += list(item.keys()) + list(item.values())
        elif isinstance(item, (list, tuple)):
            stack += list(item)
    return obj


def short_repr(value: Any, limit: int = 200) -> str:
    """repr(value) cut to `limit` characters without building the whole text of a huge value."""
    import reprlib

    r = reprlib.Repr()
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 10
    r.maxstring = r.maxother = limit
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
