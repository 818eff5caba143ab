"""The open zoo registry: a user's model under a name every entry point takes; areas declare theirs."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from dnninfer import zoo
from dnninfer.cli import main
from dnninfer.errors import UserError
from dnninfer.zoo import registry


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


SPEC = zoo.ModelSpec("user_two_layer", TwoLayer, (zoo.InputSpec((1, 6)),), "user", "a user's two-layer MLP")


@pytest.fixture
def registered() -> Iterator[zoo.ModelSpec]:
    zoo.register(SPEC)
    yield SPEC
    zoo.unregister(SPEC.name)


def test_registered_model_is_taken_by_name_everywhere(registered, capsys) -> None:
    assert registered.name in zoo.names() and zoo.names(origin="user") == [registered.name]
    a, b = zoo.build_model(registered.name, seed=4), zoo.build_model(registered.name, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    loaded = zoo.load_model(registered.name, batch=3)
    assert loaded.inputs[0].shape == (3, 6) and loaded.model(*loaded.inputs).shape == (3, 3)
    assert main(["models", registered.name, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["models"][0]
    assert row["name"] == registered.name and row["params"] == 6 * 5 + 5 + 5 * 3 + 3


def test_unregistered_name_is_refused_after_unregister() -> None:
    zoo.register(SPEC)
    zoo.unregister(SPEC.name)
    assert SPEC.name not in zoo.names()  # negative control for the test above: the name really goes
    with pytest.raises(UserError, match="user_two_layer"):
        zoo.get(SPEC.name)


def test_same_spec_twice_is_a_no_op_but_a_clash_is_refused(registered) -> None:
    assert zoo.register(registered) is registered
    other = zoo.ModelSpec(registered.name, nn.Identity, (zoo.InputSpec((1, 6)),), "user", "another model")
    with pytest.raises(UserError, match="already registered"):
        zoo.register(other)
    with pytest.raises(UserError, match=r"already registered \(by zoo\)"):
        zoo.register(zoo.ModelSpec("resnet18", TwoLayer, (zoo.InputSpec((1, 6)),), "user", "shadowing"))
    zoo.register(other, replace=True)
    assert zoo.get(registered.name) is other


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "has space"}, "model name"),
    ({"name": ""}, "model name"),
    ({"build": "not callable"}, "callable"),
    ({"input_specs": ()}, "InputSpec"),
    ({"input_specs": ((1, 6),)}, "InputSpec"),
])
def test_bad_specs_are_user_errors(kwargs, match) -> None:
    fields = {"name": "ok_name", "build": TwoLayer, "input_specs": (zoo.InputSpec((1, 6)),), "task": "user",
              "description": "d"} | kwargs
    with pytest.raises(UserError, match=match):
        zoo.ModelSpec(**fields)


def test_register_takes_only_a_spec() -> None:
    with pytest.raises(UserError, match="ModelSpec"):
        zoo.register(TwoLayer)  # type: ignore[arg-type]


def test_every_area_models_module_declares_through_zoo_models() -> None:
    """Areas declare models in `<area>/models.py`; each declared spec is in the registry with its area
    as origin, and no area keeps a private model table beside it."""
    modules = registry._area_model_modules()
    assert "dnninfer.schedule.models" in modules and "dnninfer.zoo.models" not in modules
    declared = {}
    for module in modules:
        for spec in getattr(importlib.import_module(module), "ZOO_MODELS", ()):
            declared[spec.name] = module.split(".")[1]
    assert {"nasnet_cells", "digits_vmcu_cnn", "tiny_detector", "mnist1d_cnn"} <= set(declared)
    for name, area in declared.items():
        assert zoo.get(name).origin == area
    schedule = importlib.import_module("dnninfer.schedule.models")
    assert not hasattr(schedule, "EXTRA_MODELS")


def test_a_clashing_area_declaration_is_caught(monkeypatch) -> None:
    """Negative control for discovery: an area declaring a built-in's name does not silently win."""
    fake = type("M", (), {"ZOO_MODELS": (zoo.ModelSpec("resnet18", TwoLayer, (zoo.InputSpec((1, 6)),), "user",
                                                       "clash", origin="fake"),)})
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "_area_model_modules", lambda: ["fake.models"])
    monkeypatch.setattr(registry.importlib, "import_module", lambda name: fake)
    with pytest.raises(ValueError, match="resnet18"):
        registry.names()
