"""The small files fptplus keeps: damaged JSON is a named error, writes are atomic with per-process temp files."""

from __future__ import annotations

import os

import pytest

from fptplus.errors import FPTPlusError
from fptplus.files import check_schema, display, human_bytes, read_json, read_json_schema, write_json_atomic


class OopsError(FPTPlusError):
    pass


@pytest.mark.parametrize(
    "data,message",
    [
        (None, r"x\.json is missing; fix it"),
        (b"\xff{}", r"x\.json is damaged: not UTF-8 text \(byte 0\); fix it"),
        (b'{"a": ', r"x\.json is damaged: not valid JSON \(Expecting value, line 1\); fix it"),
    ],
)
def test_read_json_names_the_file_and_the_fix(tmp_path, data, message):
    path = tmp_path / "x.json"
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(OopsError, match=message):
        read_json(path, OopsError, "fix it")


def test_schema_checks_keys_types_and_nesting(tmp_path):
    schema = {"n": int, "ratio": float, "fp": {"layers": list}, "name": (str, type(None))}
    good = {"n": 3, "ratio": 1, "fp": {"layers": [1]}, "name": None, "extra": "ok"}
    assert check_schema(good, schema, "f.json", OopsError) is good
    for bad, problem in [
        ([], "the file should be an object, found list"),
        ({**good, "n": True}, "'n' should be an integer, found bool"),
        ({**good, "ratio": "1"}, "'ratio' should be a number, found str"),
        ({**good, "fp": {}}, "missing key 'fp.layers'"),
        ({k: v for k, v in good.items() if k != "name"}, "missing key 'name'"),
        ({**good, "name": 3}, "'name' should be a string or null, found int"),
    ]:
        with pytest.raises(OopsError, match=f"f.json is damaged: {problem}"):
            check_schema(bad, schema, "f.json", OopsError)
    write_json_atomic(tmp_path / "ok.json", good)
    assert read_json_schema(tmp_path / "ok.json", schema, OopsError) == good


def test_atomic_writes_leave_no_temp_files(tmp_path):
    for i in range(3):
        write_json_atomic(tmp_path / "a.json", {"i": i, "name": os.fsdecode(b"caf\xe9")})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert read_json(tmp_path / "a.json")["name"] == os.fsdecode(b"caf\xe9")  # escaped, round-trips


def test_human_sizes_and_printable_names():
    assert [human_bytes(n) for n in (0, 1000, 1536, 5 * 2**20, 3 * 2**30)] == [
        "0 B", "1000 B", "1.5 KiB", "5.0 MiB", "3.00 GiB"]  # fmt: skip
    assert display(os.fsdecode(b"a/caf\xe9.png")) == "a/caf\\xe9.png"
