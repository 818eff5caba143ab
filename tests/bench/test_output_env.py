"""JSON on stdout, tables on stderr, and the environment record."""

import dataclasses
import json
from pathlib import Path

import numpy as np

from dnninfer.bench.output import emit_json, print_table, to_jsonable
from dnninfer.env import capture_env


@dataclasses.dataclass
class _Point:
    x: float
    where: Path


def test_emit_json_prints_one_valid_object(capsys):
    emit_json(
        {
            "a": np.float32(1.5),
            "b": np.int64(3),
            "c": float("nan"),
            "d": float("inf"),
            "e": np.array([1.0, np.nan]),
            "f": _Point(2.0, Path("/tmp/x")),
            "g": (np.bool_(True),),
        }
    )
    out, err = capsys.readouterr()
    assert out.count("\n") == 1
    data = json.loads(out)
    assert data == {"a": 1.5, "b": 3, "c": None, "d": None, "e": [1.0, None],
                    "f": {"x": 2.0, "where": "/tmp/x"}, "g": [True]}  # fmt: skip
    assert err == ""


def test_to_jsonable_names_the_unencodable_value():
    try:
        to_jsonable({"ours": {"bad": object()}})
    except TypeError as exc:
        assert "$.ours.bad" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("object() must not be silently stringified")


def test_print_table_goes_to_stderr(capsys):
    print_table("t", [{"case": "a", "ms": 1.23456}, {"case": "b", "extra": None}])
    out, err = capsys.readouterr()
    assert out == ""
    assert "1.235" in err and "extra" in err


def test_capture_env_has_versions_threads_and_load():
    env = capture_env()
    for key in ("python", "torch", "numpy", "platform", "cpu_count", "torch_threads", "loadavg",
                "timestamp", "git_commit"):  # fmt: skip
        assert key in env
    assert isinstance(env["torch_threads"], int)
    json.dumps(env)  # plain JSON data
