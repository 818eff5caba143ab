"""Contract tests for the model zoo, run over every registered model.

Each model is built once (a module-scoped parametrized fixture, so pytest groups tests by model
and frees each before building the next) and checked for: exact parameter count, finite output of
the expected shape, dependence on its input, and fx-traceability with identical output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
import torch.fx
from torch import nn

from dnninfer import zoo
from dnninfer.errors import UserError

# torchvision's counts at num_classes=1000 (googlenet / inception_v3 with aux_logits=False),
# plus pinned counts for our own models so an accidental architecture change is caught.
PARAM_COUNTS = {
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "googlenet": 6_624_904,
    "inception_v3": 23_834_568,
    "bert_encoder": 11_171_074,
    "deepfm": 716_815,
    "digits_mlp": 17_226,
    "digits_cnn": 25_978,
    "lenet_digits": 19_754,
    # declared by areas in <area>/models.py ZOO_MODELS
    "digits_vmcu_cnn": 4_106,
    "rns_digits_cnn": 9_930,
    "mnist1d_mlp": 78_858,
    "mnist1d_cnn": 8_010,
    "nasnet_cells": 737_800,
    "tiny_detector": 190_677,
}

IMAGENET = ("alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v2", "googlenet", "inception_v3")
DIGITS = ("digits_mlp", "digits_cnn", "lenet_digits", "digits_vmcu_cnn", "rns_digits_cnn", "mnist1d_mlp", "mnist1d_cnn")
OUTPUT_SHAPES = {n: (1, 1000) for n in (*IMAGENET, "nasnet_cells")} | {n: (1, 10) for n in DIGITS}
OUTPUT_SHAPES |= {"bert_encoder": (1, 2), "deepfm": (1, 1), "tiny_detector": (1, 5, 7, 7)}

TASKS = {"image-classification", "nlp", "recsys", "digits", "mnist1d", "detection"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=zoo.names())
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(name: str) -> nn.Module:
    return zoo.build_model(name)


@pytest.fixture(scope="module")
def output(name: str, model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(*zoo.example_inputs(name))


def test_tables_cover_every_model() -> None:
    assert set(PARAM_COUNTS) == set(zoo.names())
    assert set(OUTPUT_SHAPES) == set(zoo.names())


def test_parameter_count(name: str, model: nn.Module) -> None:
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]


def test_built_in_eval_mode(model: nn.Module) -> None:
    assert not any(m.training for m in model.modules())


def test_forward_finite_with_expected_shape(name: str, output: torch.Tensor) -> None:
    assert output.shape == OUTPUT_SHAPES[name]
    assert output.dtype == torch.float32
    assert torch.isfinite(output).all()


def test_output_depends_on_input(name: str, model: nn.Module, output: torch.Tensor) -> None:
    # Negative control for the trace check below: a model whose activations vanish would
    # give near-constant outputs, and "traced equals eager" would then hold trivially.
    with torch.no_grad():
        other = model(*zoo.example_inputs(name, seed=1))
    assert not torch.allclose(output, other)


def test_fx_trace_matches_eager(name: str, model: nn.Module, output: torch.Tensor) -> None:
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        got = traced(*zoo.example_inputs(name))
    torch.testing.assert_close(got, output, rtol=1e-5, atol=1e-6)
    assert any(n.op == "call_module" for n in traced.graph.nodes)


def test_spec_fields(name: str) -> None:
    spec = zoo.get(name)
    assert spec.name == name
    assert spec.task in TASKS
    assert spec.description and "\n" not in spec.description
    assert all(s.shape[0] == 1 for s in spec.input_specs)


def test_example_inputs_match_specs(name: str) -> None:
    spec = zoo.get(name)
    inputs = zoo.example_inputs(name, batch=3)
    assert len(inputs) == len(spec.input_specs)
    for x, s in zip(inputs, spec.input_specs, strict=True):
        assert x.shape == (3, *s.shape[1:])
        assert x.dtype == s.dtype
        if s.high is not None:
            assert int(x.min()) >= 0 and int(x.max()) < s.high


def test_image_input_shapes() -> None:
    for name in IMAGENET:
        spec = zoo.get(name)
        side = 299 if name == "inception_v3" else 224
        assert spec.task == "image-classification"
        assert spec.input_specs == (zoo.InputSpec((1, 3, side, side)),)


def test_integer_input_bounds() -> None:
    assert zoo.get("bert_encoder").input_specs == (zoo.InputSpec((1, 128), torch.int64, 30522),)
    sparse, dense = zoo.get("deepfm").input_specs
    assert (sparse.shape, sparse.dtype, sparse.high) == ((1, 26), torch.int64, 1000)
    assert (dense.shape, dense.dtype, dense.high) == ((1, 13), torch.float32, None)


@pytest.mark.parametrize("small", ["bert_encoder", "deepfm", "digits_mlp", "digits_cnn", "lenet_digits"])
def test_batched_forward(small: str) -> None:
    model = zoo.build_model(small)
    with torch.no_grad():
        out = model(*zoo.example_inputs(small, batch=4))
    assert out.shape == (4, *OUTPUT_SHAPES[small][1:])
    assert torch.isfinite(out).all()


def test_deepfm_output_is_probability() -> None:
    with torch.no_grad():
        out = zoo.build_model("deepfm")(*zoo.example_inputs("deepfm", batch=8))
    assert ((out > 0) & (out < 1)).all()


def test_unknown_name_is_user_error_listing_names() -> None:
    with pytest.raises(UserError) as err:
        zoo.get("resnet51")
    msg = str(err.value)
    assert "\n" not in msg
    assert "resnet51" in msg
    assert all(n in msg for n in zoo.names())


@pytest.mark.parametrize("call", [zoo.build_model, zoo.example_inputs])
def test_unknown_name_rejected_by_entry_points(call: Callable[[str], object]) -> None:
    with pytest.raises(UserError):
        call("nope")


def test_bad_batch_is_user_error() -> None:
    with pytest.raises(UserError):
        zoo.example_inputs("digits_mlp", batch=0)


def test_example_inputs_deterministic() -> None:
    for name in ("deepfm", "bert_encoder", "resnet18"):
        a = zoo.example_inputs(name, seed=7)
        b = zoo.example_inputs(name, seed=7)
        c = zoo.example_inputs(name, seed=8)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        assert not all(torch.equal(x, z) for x, z in zip(a, c, strict=True))


def test_build_deterministic_per_seed() -> None:
    a = zoo.build_model("digits_cnn", seed=3).state_dict()
    b = zoo.build_model("digits_cnn", seed=3).state_dict()
    c = zoo.build_model("digits_cnn", seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_build_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    zoo.build_model("digits_mlp", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_input_spec_rejects_integer_without_high() -> None:
    with pytest.raises(ValueError):
        zoo.InputSpec((1, 4), torch.int64)
    with pytest.raises(ValueError):
        zoo.InputSpec((1, 4), torch.float32, 10)


def test_torchvision_module_names() -> None:
    names = {n for n, _ in zoo.build_model("resnet50").named_modules()}
    assert {"conv1", "bn1", "layer1.0.downsample.0", "layer4.2.conv3", "fc"} <= names
    names = {n for n, _ in zoo.build_model("mobilenet_v2").named_modules()}
    assert {"features.0.0", "features.1.conv.0.0", "features.18.0", "classifier.1"} <= names
    names = {n for n, _ in zoo.build_model("inception_v3").named_modules()}
    assert {"Conv2d_1a_3x3.conv", "Mixed_7c.branch_pool.bn", "fc"} <= names
    assert "AuxLogits" not in names
