"""Contracts every registered system keeps (our test_common): `bench --quick --json` prints one
JSON object with the required keys, and every source module has a test file."""

import json
from pathlib import Path

import pytest

from conftest import quick_bench
from dnninfer.bench import registry

registry.load_all()
SRC = Path(__file__).parents[1] / "src" / "dnninfer"


@pytest.mark.parametrize("system", sorted(registry.SYSTEMS))
def test_bench_quick_json_contract(system):
    code, out = quick_bench(system)
    assert code == 0
    obj = json.loads(out)  # exactly one object: json.loads rejects trailing data
    for key in registry.REQUIRED_KEYS:
        assert key in obj, key
    assert obj["system"] == system and obj["quick"] is True
    assert obj["ours"] and isinstance(obj["rows"], list) and obj["rows"]
    assert "torch" in obj["env"] and "loadavg" in obj["env"]


def test_every_area_has_tests():
    areas = [p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    tests = Path(__file__).parent
    missing = [a for a in areas if not any((tests / a).glob("test_*.py"))]
    assert not missing, f"areas without tests/<area>/test_*.py: {missing}"
