"""Contracts every registered system keeps (our test_common): `bench --quick --json` prints one
JSON object with the required keys, and every source module has a test file."""

import json
from pathlib import Path

import pytest

from conftest import quick_bench
from dnninfer.bench import registry

registry.load_all()
SRC = Path(__file__).parents[1] / "src" / "dnninfer"


#: systems whose smoke run needs the machine to itself (the testbed's one bridge and address range):
#: their own test file runs `check_contract`, so it never overlaps their other tests on another worker
OWN_FILE = {"testbed": "tests/testbed/test_testbed.py"}


@pytest.mark.parametrize("system", sorted(set(registry.SYSTEMS) - set(OWN_FILE)))
def test_bench_quick_json_contract(system):
    check_contract(system)


def test_systems_run_elsewhere_have_their_contract_test_there():
    root = Path(__file__).parents[1]
    for system, path in OWN_FILE.items():
        assert system in registry.SYSTEMS
        assert f'check_contract("{system}")' in (root / path).read_text(), path


def check_contract(system):
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
