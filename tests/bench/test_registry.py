"""The registry: registration, discovery, lookup errors and result validation."""

import sys
import textwrap

import pytest

from dnninfer.bench import registry
from dnninfer.bench.registry import BenchArgs, InvalidBenchResult, get_system, register_system, run_system
from dnninfer.errors import UserError


@pytest.fixture
def clean_registry(monkeypatch):
    """Leave SYSTEMS / LOAD_ERRORS as found, and keep get_system from importing real areas."""
    monkeypatch.setattr(registry, "SYSTEMS", dict(registry.SYSTEMS))
    monkeypatch.setattr(registry, "LOAD_ERRORS", dict(registry.LOAD_ERRORS))
    monkeypatch.setattr(registry, "load_all", lambda **kw: [])
    return registry.SYSTEMS


def _register_dummy(result):
    @register_system("dummy-test", description="a test system")
    def bench(args: BenchArgs) -> dict:
        return result(args) if callable(result) else dict(result)

    return bench


def test_run_system_fills_env_system_and_quick(clean_registry):
    _register_dummy(lambda args: {"paper": {"x": 1.0}, "ours": {"x": 1.1}, "rows": [{"seed": args.seed}]})
    result = run_system("dummy-test", BenchArgs(quick=True, seed=5))
    assert result["system"] == "dummy-test" and result["quick"] is True
    assert result["rows"] == [{"seed": 5}]
    assert "torch_threads" in result["env"] and "bench_wall_s" in result["env"]


def test_run_system_keeps_env_a_bench_supplies(clean_registry):
    _register_dummy({"paper": {}, "ours": {}, "rows": [], "env": {"custom": 1}})
    env = run_system("dummy-test", BenchArgs())["env"]
    assert env["custom"] == 1 and "torch" not in env


def test_missing_key_raises_naming_it(clean_registry):
    _register_dummy({"paper": {}, "ours": {}})
    with pytest.raises(InvalidBenchResult, match="'rows'"):
        run_system("dummy-test", BenchArgs())


def test_wrong_type_raises(clean_registry):
    _register_dummy({"paper": {}, "ours": [], "rows": []})
    with pytest.raises(InvalidBenchResult, match="'ours' must be"):
        run_system("dummy-test", BenchArgs())


def test_unknown_name_is_user_error_listing_registered(clean_registry):
    _register_dummy({})
    with pytest.raises(UserError, match="dummy-test") as info:
        get_system("no-such-system")
    assert "no-such-system" in str(info.value)


def test_registering_a_name_twice_from_different_functions_fails(clean_registry):
    _register_dummy({})
    with pytest.raises(ValueError, match="registered twice"):

        @register_system("dummy-test", description="other")
        def other(args):
            return {}


def test_load_all_imports_area_bench_modules_and_records_failures(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "SYSTEMS", {})
    monkeypatch.setattr(registry, "LOAD_ERRORS", {})
    pkg = tmp_path / "fakepkg_dnninfer"
    files = {
        "__init__.py": "",
        "good/__init__.py": "",
        "good/bench.py": """
            from dnninfer.bench.registry import register_system
            @register_system("fake-good", description="d")
            def bench(args):
                return {}
        """,
        "nobench/__init__.py": "raise RuntimeError('areas without bench.py must not be imported')",
        "broken/__init__.py": "",
        "broken/bench.py": "import does_not_exist_anywhere",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        loaded = registry.load_all(package="fakepkg_dnninfer")
        assert loaded == ["fakepkg_dnninfer.good.bench"]
        assert set(registry.SYSTEMS) == {"fake-good"}
        assert "does_not_exist_anywhere" in registry.LOAD_ERRORS["fakepkg_dnninfer.broken.bench"]
        with pytest.raises(ModuleNotFoundError):
            registry.load_all(package="fakepkg_dnninfer", strict=True)
    finally:
        for name in [m for m in sys.modules if m.startswith("fakepkg_dnninfer")]:
            del sys.modules[name]


def test_bench_args_extra():
    args = BenchArgs(extra={"model": "resnet18"})
    assert args.get("model") == "resnet18" and args.get("missing", 3) == 3
