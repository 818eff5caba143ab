"""A model that cannot be captured is the user's mistake: one line naming the model and the node."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import fx, nn

from dnninfer.cli import main
from dnninfer.errors import UserError
from dnninfer.graph import capture


class ShapeMismatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(10, 4)  # expects 10 features, gets 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class Untraceable(nn.Module):
    """Data-dependent control flow: neither symbolic_trace nor torch.export can follow it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else x


class UntraceableMismatch(nn.Module):
    """fx fails on the branch; torch.export then hits the shape mismatch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return self.fc(x)
        return x


def _error(model: nn.Module) -> str:
    with pytest.raises(UserError) as info:
        capture(model, (torch.randn(2, 8),))
    return str(info.value)


def test_shape_mismatch_is_one_line_naming_model_node_and_cause():
    msg = _error(ShapeMismatch())
    assert "\n" not in msg
    assert msg.startswith("model ShapeMismatch: failed at node 'fc2' (Linear fc2): RuntimeError: mat1 and mat2")


@pytest.mark.parametrize("model", [Untraceable(), UntraceableMismatch()], ids=type)
def test_untraceable_model_is_one_line(model):
    msg = _error(model)
    assert "\n" not in msg
    assert msg.startswith(f"model {type(model).__name__}: cannot be captured")


def test_untraceable_mismatch_names_the_underlying_shape_error():
    msg = _error(UntraceableMismatch())
    assert "torch.export failed (RuntimeError: " in msg and "[10, 4]" in msg


def test_negative_control_fx_alone_would_print_several_lines():
    """fx's own interpreter appends 'While executing ...' lines: the one-line check can fail."""
    gm = fx.symbolic_trace(ShapeMismatch())
    with pytest.raises(RuntimeError) as info:
        fx.Interpreter(gm).run(torch.randn(2, 8))
    assert len(str(info.value).splitlines()) > 1


MODEL_FILE = """
import torch
from torch import nn


class {name}(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear({width}, 4)

    def forward(self, x):
        {body}


def model():
    return {name}()


def example_inputs():
    return (torch.randn(2, 8),)
"""


def _write(tmp_path: Path, name: str, width: int, body: str) -> str:
    path = tmp_path / f"{name.lower()}.py"
    path.write_text(textwrap.dedent(MODEL_FILE).format(name=name, width=width, body=body))
    return str(path)


@pytest.mark.parametrize(
    ("name", "body", "needle"),
    [
        ("Mismatch", "return self.fc2(torch.relu(self.fc1(x)))", "failed at node 'fc2'"),
        ("Branchy", "return self.fc2(self.fc1(x)) if x.sum() > 0 else x", "cannot be captured"),
    ],
)
def test_cli_prints_exactly_one_line_and_exits_2(tmp_path, capsys, name, body, needle):
    code = main(["inspect", _write(tmp_path, name, 10, body)])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"dnninfer: error: model {name.lower()}: ") and needle in err  # the file's stem


def test_negative_control_a_good_model_file_inspects_fine(tmp_path, capsys):
    code = main(["inspect", _write(tmp_path, "Good", 16, "return self.fc2(torch.relu(self.fc1(x)))"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and "fc2" in out and err == ""
