"""ONNX import: what torch.onnx exports (legacy and dynamo exporters) comes back as a torch.fx graph
that computes what onnxruntime and the original model compute, costs what the original costs, and
uses nothing but torch at run time."""

from __future__ import annotations

import builtins
import collections
import contextlib
import copy
import io
import logging
import operator
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from dnninfer import zoo
from dnninfer.errors import UserError
from dnninfer.graph import capture, equal_flops_chain
from dnninfer.zoo.onnx_import import OPS, import_onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import user_mcu_cnn
import user_models

TOL = {"atol": 1e-4, "rtol": 1e-4}
MAC_KINDS = ("conv", "linear", "matmul")
EXPORTERS = {"legacy": {"dynamo": False, "opset_version": 17}, "dynamo": {"dynamo": True, "opset_version": 18}}


def _image(size: int) -> tuple[torch.Tensor, ...]:
    return (torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1)),)


def _zoo(name: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    return zoo.build_model(name), inputs


MODELS = {  # small resolutions keep the file fast; every zoo CNN ends in an adaptive pool
    "resnet18": lambda: _zoo("resnet18", _image(64)),
    "mobilenet_v2": lambda: _zoo("mobilenet_v2", _image(64)),
    "googlenet": lambda: _zoo("googlenet", _image(64)),
    "bert_encoder": lambda: _zoo("bert_encoder", (zoo.example_inputs("bert_encoder")[0][:, :32],)),
    "unet": user_models.unet,
    "three_branch": user_models.three_branch,
    "mcu_cnn": lambda: (user_mcu_cnn.model(), user_mcu_cnn.example_inputs()),
}
CASES = [(m, e) for m in MODELS for e in EXPORTERS]


def _export(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, **kwargs) -> None:
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, inputs, str(path), **kwargs)
    finally:
        logging.disable(logging.NOTSET)


class _Cache:
    """Each model exported, imported and captured once per module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models: dict[str, tuple] = {}
        self.files: dict[tuple[str, str], Path | str] = {}
        self.imports: dict[tuple[str, str], tuple] = {}
        self.graphs: dict[tuple[str, str], object] = {}

    def model(self, name: str) -> tuple:
        """(model, inputs, captured graph of the original)."""
        if name not in self.models:
            model, inputs = MODELS[name]()
            self.models[name] = (model.eval(), inputs, capture(model, inputs, name=name))
        return self.models[name]

    def file(self, name: str, exporter: str) -> Path:
        key = (name, exporter)
        if key not in self.files:
            model, inputs, _ = self.model(name)
            path = self.root / f"{name}_{exporter}.onnx"
            try:
                _export(model, inputs, path, **EXPORTERS[exporter])
                self.files[key] = path
            except Exception as e:  # the exporter's limitation, not the importer's
                self.files[key] = f"torch.onnx.export({exporter}) cannot export {name}: {type(e).__name__}: " \
                                  f"{str(e).strip().splitlines()[0][:200]}"
        if isinstance(self.files[key], str):
            pytest.skip(self.files[key])
        return self.files[key]

    def imported(self, name: str, exporter: str) -> tuple:
        key = (name, exporter)
        if key not in self.imports:
            self.imports[key] = import_onnx(self.file(name, exporter))
        return self.imports[key]

    def graph(self, name: str, exporter: str):
        key = (name, exporter)
        if key not in self.graphs:
            gm, inputs = self.imported(name, exporter)
            self.graphs[key] = capture(gm, inputs, name=f"{name}_{exporter}")
        return self.graphs[key]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> _Cache:
    return _Cache(tmp_path_factory.mktemp("onnx"))


def _ort(path: Path, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)})


def _run(gm: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    with torch.no_grad():
        out = gm(*inputs)
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]


# -- exported models ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_import_matches_onnxruntime_and_the_original(cache: _Cache, name: str, exporter: str) -> None:
    model, _, _ = cache.model(name)
    gm, inputs = cache.imported(name, exporter)
    ours = _run(gm, inputs)
    theirs = _ort(cache.file(name, exporter), inputs)
    original = _run(model, inputs)
    assert len(ours) == len(theirs) == len(original) == 1
    np.testing.assert_allclose(ours[0], theirs[0], **TOL)
    np.testing.assert_allclose(ours[0], original[0], **TOL)


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_captured_import_costs_what_the_original_costs(cache: _Cache, name: str, exporter: str) -> None:
    """Same conv/linear/matmul nodes and FLOPs; the same total once the BatchNorm layers the
    exporters fold into conv weights are taken out of the original's count."""
    _, _, original = cache.model(name)
    imported = cache.graph(name, exporter)
    kinds_o = collections.Counter(n.kind for n in original.nodes.values())
    kinds_i = collections.Counter(n.kind for n in imported.nodes.values())
    assert {k: kinds_i[k] for k in MAC_KINDS} == {k: kinds_o[k] for k in MAC_KINDS}
    mac_o = sum(n.flops for n in original.nodes.values() if n.kind in MAC_KINDS)
    mac_i = sum(n.flops for n in imported.nodes.values() if n.kind in MAC_KINDS)
    assert mac_o > 0
    assert mac_i == pytest.approx(mac_o, rel=0.01)
    folded = not any(n.op_type == "BatchNormalization" for n in onnx.load(cache.file(name, exporter)).graph.node)
    bn = sum(n.flops for n in original.nodes.values() if n.kind == "bn") if folded else 0
    assert imported.total_flops == pytest.approx(original.total_flops - bn, rel=0.01)
    assert not [n.target for n in imported.nodes.values() if n.kind == "unknown"]


def _plain_torch(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op in ("placeholder", "output", "get_attr"):
        return True
    if node.op == "call_method":
        return isinstance(node.target, str) and hasattr(torch.Tensor, node.target)
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__module__.startswith("torch.nn")
    module = getattr(node.target, "__module__", None) or ""
    stdlib = (*vars(operator).values(), *vars(builtins).values())
    return module.startswith("torch") or node.target in stdlib


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_graph_module_runs_on_torch_alone(cache: _Cache, name: str, exporter: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    gm, inputs = cache.imported(name, exporter)
    foreign = [n.format_node() for n in gm.graph.nodes if not _plain_torch(gm, n)]
    assert not foreign
    assert "onnx" not in gm.code.lower()
    assert not re.search(r"\bort\b", gm.code)
    expected = _run(gm, inputs)
    monkeypatch.setitem(sys.modules, "onnx", None)  # any `import onnx` from here on fails
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    np.testing.assert_array_equal(_run(gm, inputs)[0], expected[0])


def test_plain_torch_check_rejects_foreign_calls() -> None:
    """Negative control for the check above: a node calling into onnx is caught."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_function(numpy_helper.from_array, (x,)))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    assert not _plain_torch(gm, next(n for n in gm.graph.nodes if n.op == "call_function"))
    assert "onnx" in gm.code.lower()


def test_split_stages_of_imported_graph_compose_to_the_model(cache: _Cache) -> None:
    gm, inputs = cache.imported("resnet18", "dynamo")
    graph = cache.graph("resnet18", "dynamo")
    stages = graph.split(equal_flops_chain(graph, 3))
    assert len(stages) == 3
    with torch.no_grad():
        out = graph.run_stages(stages, *inputs)
    torch.testing.assert_close(out, gm(*inputs), rtol=1e-5, atol=1e-5)


def test_perturbed_weight_fails_the_comparison(cache: _Cache) -> None:
    """Negative control: the ORT comparison above does notice a wrong weight."""
    gm, inputs = cache.imported("three_branch", "legacy")
    broken = copy.deepcopy(gm)
    conv = next(n for n in broken.graph.nodes if n.op == "call_module"
                and isinstance(broken.get_submodule(n.target), torch.nn.Conv2d))
    weight = broken.get_submodule(conv.target).weight
    with torch.no_grad():
        weight[0].add_(0.05)
    theirs = _ort(cache.file("three_branch", "legacy"), inputs)[0]
    assert np.allclose(_run(gm, inputs)[0], theirs, **TOL)
    assert not np.allclose(_run(broken, inputs)[0], theirs, **TOL)


def test_dynamic_batch_export_runs_at_other_batches(tmp_path: Path) -> None:
    """A legacy export with a dynamic batch axis: shapes are computed at run time (x.size()), not
    frozen at import, so one GraphModule serves every batch size ORT serves."""
    model = zoo.build_model("bert_encoder")
    ids = zoo.example_inputs("bert_encoder", batch=2)[0][:, :16]
    path = tmp_path / "bert_dyn.onnx"
    _export(model, (ids,), path, dynamo=False, opset_version=17, input_names=["ids"],
            dynamic_axes={"ids": {0: "batch"}})
    gm, inputs = import_onnx(path, batch=2)
    assert inputs[0].shape == (2, 16)
    assert any(n.op == "call_method" and n.target == "size" for n in gm.graph.nodes)
    for x in (inputs[0], inputs[0][:1].repeat(3, 1)):
        np.testing.assert_allclose(_run(gm, (x,))[0], _ort(path, (x,))[0], **TOL)
        np.testing.assert_allclose(_run(gm, (x,))[0], _run(model, (x,))[0], **TOL)


# -- example inputs ---------------------------------------------------------------------------------

def _save(tmp_path: Path, nodes: list, inputs: list, outputs: list, inits: list = (), opset: int = 18,
          name: str = "m.onnx") -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _embedding_model(tmp_path: Path) -> Path:
    table = numpy_helper.from_array(np.arange(14, dtype=np.float32).reshape(7, 2), "table")
    return _save(tmp_path, [helper.make_node("Gather", ["table", "ids"], ["y"], name="lookup")],
                 [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 5])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [table])


def test_example_ids_stay_inside_the_embedding_table(tmp_path: Path) -> None:
    path = _embedding_model(tmp_path)
    gm, (ids,) = import_onnx(path, batch=300)
    assert ids.shape == (300, 5) and ids.dtype == torch.int64
    assert int(ids.min()) == 0 and int(ids.max()) == 6  # 0..rows-1, every id drawn in 1500 draws
    np.testing.assert_array_equal(_run(gm, (ids,))[0], _ort(path, (ids,))[0])
    assert torch.equal(import_onnx(path, batch=300, seed=0)[1][0], ids)
    assert not torch.equal(import_onnx(path, batch=300, seed=1)[1][0], ids)


def test_input_shape_sets_dynamic_dims_only(tmp_path: Path) -> None:
    path = _embedding_model(tmp_path)
    assert import_onnx(path, input_shape=(4, 5))[1][0].shape == (4, 5)
    with pytest.raises(UserError, match=r"input_shape 4,6 does not fit .*\(\?,5\)"):
        import_onnx(path, input_shape=(4, 6))


# -- user errors ------------------------------------------------------------------------------------

def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(("op", "domain"), [("NonMaxSuppression", ""), ("FooBar", "com.example")])
def test_unsupported_op_names_the_op_and_node(tmp_path: Path, op: str, domain: str) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="act"),
             helper.make_node(op, ["h"], ["y"], name="the_node", domain=domain)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    path = tmp_path / "bad_op.onnx"
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    with pytest.raises(UserError) as e:
        import_onnx(path)
    assert _one_line(e) == (f"bad_op.onnx: ONNX op {op!r} (node 'the_node') is not supported; "
                            "supported: see docs/onnx.md")


def test_unsupported_attribute_names_op_node_and_value(tmp_path: Path) -> None:
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="cubic",
                            coordinate_transformation_mode="asymmetric")
    path = _save(tmp_path, [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [scales])
    with pytest.raises(UserError) as e:
        import_onnx(path)
    assert re.fullmatch(r"m\.onnx: ONNX op 'Resize' \(node 'up'\): mode='cubic' with "
                        r"coordinate_transformation_mode='asymmetric' is not supported; supported: see docs/onnx\.md",
                        _one_line(e))


@pytest.mark.parametrize("content", [b"", b"definitely not a protobuf \xff\xfe\x00" * 7, bytes(range(256)) * 3])
def test_garbage_file_is_a_user_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"^junk\.onnx: not an ONNX model") as e:
        import_onnx(path)
    _one_line(e)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found") as e:
        import_onnx(tmp_path / "nope.onnx")
    _one_line(e)


# -- single ops against onnxruntime ---------------------------------------------------------------------

R = np.random.default_rng(0)


def _f(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def _i(values: list) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# (op, runtime inputs, initializers, attributes, opset, number of outputs[, input order]): inputs are
# wired runtime first, then initializers, unless an order is given; an initializer of None leaves
# its input slot empty.
OP_CASES = {
    "BatchNormalization": ("BatchNormalization", {"x": _f(2, 3, 4, 4)},
                           {"s": _f(3), "b": _f(3), "m": _f(3), "v": np.abs(_f(3)) + 0.5}, {"epsilon": 1e-3}, 18, 1),
    "Conv_asym_pads_groups": ("Conv", {"x": _f(1, 4, 7, 6)}, {"w": _f(6, 2, 3, 3), "b": _f(6)},
                              {"pads": [0, 1, 2, 0], "group": 2, "strides": [2, 1]}, 18, 1),
    "Conv_same_upper": ("Conv", {"x": _f(1, 2, 9, 8)}, {"w": _f(3, 2, 3, 3)},
                                {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 18, 1),
    "Conv1d": ("Conv", {"x": _f(2, 3, 10)}, {"w": _f(4, 3, 3)}, {"pads": [1, 1]}, 18, 1),
    "ConvTranspose": ("ConvTranspose", {"x": _f(1, 4, 5, 5)}, {"w": _f(4, 3, 3, 3), "b": _f(6)},
                      {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1], "group": 2}, 18, 1),
    "MaxPool_ceil_pads": ("MaxPool", {"x": _f(1, 2, 7, 7)}, {},
                          {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}, 18, 1),
    "MaxPool_asym_pads": ("MaxPool", {"x": _f(1, 2, 6, 6)}, {},
                          {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 1, 1]}, 18, 1),
    "AveragePool_exclude_pad": ("AveragePool", {"x": _f(1, 2, 7, 7)}, {},
                                {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 18, 1),
    "AveragePool_include_pad": ("AveragePool", {"x": _f(1, 2, 6, 6)}, {},
                                {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}, 18, 1),
    "AveragePool_ceil": ("AveragePool", {"x": _f(1, 2, 8, 8)}, {},
                         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}, 18, 1),
    "MaxPool_dilated_ceil": ("MaxPool", {"x": _f(1, 2, 9, 9)}, {},
                             {"kernel_shape": [3, 3], "strides": [2, 2], "dilations": [2, 2], "ceil_mode": 1}, 18, 1),
    "GlobalMaxPool": ("GlobalMaxPool", {"x": _f(2, 3, 4, 5)}, {}, {}, 18, 1),
    "Gemm_transA_alpha_beta": ("Gemm", {"a": _f(5, 3)}, {"b": _f(5, 4), "c": _f(1, 4)},
                               {"transA": 1, "alpha": 0.5, "beta": 2.0}, 18, 1),
    "Gemm_runtime_B": ("Gemm", {"a": _f(3, 5), "b": _f(4, 5)}, {"c": _f(4)}, {"transB": 1, "beta": 0.5}, 18, 1),
    "MatMul_batched": ("MatMul", {"a": _f(2, 3, 4, 5), "b": _f(2, 3, 5, 2)}, {}, {}, 18, 1),
    "Einsum": ("Einsum", {"a": _f(2, 3, 4), "b": _f(2, 4, 5)}, {}, {"equation": "bij,bjk->bik"}, 18, 1),
    "LayerNormalization_2d": ("LayerNormalization", {"x": _f(2, 3, 4, 5)}, {"s": _f(4, 5), "b": _f(4, 5)},
                              {"axis": -2, "epsilon": 1e-3}, 18, 1),
    "Softmax_opset11_coerced": ("Softmax", {"x": _f(2, 3, 4)}, {}, {"axis": 1}, 11, 1),
    "LogSoftmax": ("LogSoftmax", {"x": _f(2, 3, 4)}, {}, {"axis": 1}, 18, 1),
    "Pad_reflect": ("Pad", {"x": _f(1, 2, 4, 5)}, {"p": _i([0, 0, 1, 2, 0, 0, 2, 1])}, {"mode": "reflect"}, 18, 1),
    "Pad_edge_axes": ("Pad", {"x": _f(1, 2, 4, 5)}, {"p": _i([1, 2, 2, 0]), "v": None, "axes": _i([-1, 2])},
                      {"mode": "edge"}, 18, 1),
    "Pad_constant_value": ("Pad", {"x": _f(2, 3)}, {"p": _i([1, 0, 0, 2]), "v": np.array(0.5, np.float32)},
                           {}, 18, 1),
    "Resize_nearest_scales": ("Resize", {"x": _f(1, 2, 3, 4)}, {"roi": None, "s": np.array([1, 1, 2, 3], np.float32)},
                              {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                               "nearest_mode": "floor"}, 18, 1),
    "Resize_linear_sizes": ("Resize", {"x": _f(1, 2, 3, 4)}, {"roi": None, "s": None, "sz": _i([1, 2, 7, 9])},
                            {"mode": "linear"}, 18, 1),
    "Resize_linear_align_corners": ("Resize", {"x": _f(1, 2, 3, 4)},
                                    {"roi": None, "s": np.array([1, 1, 2, 2], np.float32)},
                                    {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, 18, 1),
    "Resize_nearest_half_pixel": ("Resize", {"x": _f(1, 1, 4, 4)}, {"roi": None, "s": None, "sz": _i([1, 1, 6, 7])},
                                  {"mode": "nearest", "nearest_mode": "round_prefer_ceil"}, 18, 1),
    "Resize_linear_downscale": ("Resize", {"x": _f(1, 2, 8, 9)},
                                {"roi": None, "s": np.array([1, 1, 0.5, 0.4], np.float32)}, {"mode": "linear"}, 18, 1),
    "Resize_linear_pytorch_half_pixel": ("Resize", {"x": _f(1, 2, 4, 5)},
                                         {"roi": None, "s": None, "sz": _i([1, 2, 3, 9])},
                                         {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
                                         18, 1),
    "Resize_cubic": ("Resize", {"x": _f(1, 2, 4, 5)}, {"roi": None, "s": np.array([1, 1, 2, 1.5], np.float32)},
                     {"mode": "cubic"}, 18, 1),
    "Split_sizes": ("Split", {"x": _f(2, 5, 3)}, {"split": _i([2, 3])}, {"axis": 1}, 18, 2),
    "Split_num_outputs": ("Split", {"x": _f(2, 7)}, {}, {"axis": -1, "num_outputs": 3}, 18, 3),
    "Slice_negative": ("Slice", {"x": _f(4, 10, 3)}, {"st": _i([-8, 0]), "en": _i([-1, 9999]), "ax": _i([1, 0]),
                                                      "sp": _i([2, 1])}, {}, 18, 1),
    "Slice_reverse_const": ("Slice", {}, {"x": _f(3, 5), "st": _i([-1]), "en": _i([-9999]), "ax": _i([1]),
                                          "sp": _i([-2])}, {}, 18, 1),
    "Gather_axis1": ("Gather", {"x": _f(2, 5, 3)}, {"i": _i([4, -1, 0])}, {"axis": 1}, 18, 1),
    "Gather_scalar": ("Gather", {"x": _f(2, 5, 3)}, {"i": np.array(-2, np.int64)}, {"axis": 1}, 18, 1),
    "GatherElements": ("GatherElements", {"x": _f(3, 4)}, {"i": _i([[0, 3], [1, 1], [2, 0]])}, {"axis": 1}, 18, 1),
    "GatherND": ("GatherND", {"x": _f(3, 4, 2)}, {"i": _i([[0, 1], [2, 3]])}, {}, 18, 1),
    "Unsqueeze": ("Unsqueeze", {"x": _f(3, 4)}, {"a": _i([-1, 0])}, {}, 18, 1),
    "Squeeze": ("Squeeze", {"x": _f(3, 1, 4, 1)}, {"a": _i([1, -1])}, {}, 18, 1),
    "Squeeze_opset11_attr": ("Squeeze", {"x": _f(1, 4, 1)}, {}, {"axes": [0]}, 11, 1),
    "Expand_bidirectional": ("Expand", {"x": _f(3, 1)}, {"s": _i([2, 1, 4])}, {}, 18, 1),
    "Tile": ("Tile", {"x": _f(2, 3)}, {"r": _i([2, 1])}, {}, 18, 1),
    "Transpose_default": ("Transpose", {"x": _f(2, 3, 4)}, {}, {}, 18, 1),
    "Flatten_axis2": ("Flatten", {"x": _f(2, 3, 4, 5)}, {}, {"axis": 2}, 18, 1),
    "Reshape_zero_minus_one": ("Reshape", {"x": _f(2, 3, 4)}, {"s": _i([0, -1])}, {}, 18, 1),
    "Concat": ("Concat", {"a": _f(2, 3), "b": _f(2, 1)}, {"c": _f(2, 2)}, {"axis": -1}, 18, 1),
    "ReduceSum_keepdims0": ("ReduceSum", {"x": _f(2, 3, 4)}, {"a": _i([1])}, {"keepdims": 0}, 18, 1),
    "ReduceMax_all": ("ReduceMax", {"x": _f(2, 3, 4)}, {}, {}, 18, 1),
    "ReduceMean_opset13_attr": ("ReduceMean", {"x": _f(2, 3, 4)}, {}, {"axes": [0, 2], "keepdims": 0}, 13, 1),
    "ReduceMean_global": ("ReduceMean", {"x": _f(2, 3, 4, 5)}, {"a": _i([-1, -2])}, {}, 18, 1),
    "ReduceProd": ("ReduceProd", {"x": _f(2, 3, 4)}, {"a": _i([0, 2])}, {}, 18, 1),
    "ArgMax": ("ArgMax", {"x": _f(3, 5)}, {}, {"axis": 1, "keepdims": 0}, 18, 1),
    "CumSum_exclusive_reverse": ("CumSum", {"x": _f(3, 4)}, {"a": np.array(1, np.int64)},
                                 {"exclusive": 1, "reverse": 1}, 18, 1),
    "Clip_min_only": ("Clip", {"x": _f(3, 4)}, {"lo": np.array(-0.2, np.float32)}, {}, 18, 1),
    "Clip_opset6_attrs": ("Clip", {"x": _f(3, 4)}, {}, {"min": -0.1, "max": 0.3}, 6, 1),
    "HardSigmoid": ("HardSigmoid", {"x": _f(3, 4)}, {}, {"alpha": 0.3, "beta": 0.4}, 18, 1),
    "HardSigmoid_torch": ("HardSigmoid", {"x": _f(3, 4) * 4}, {}, {"alpha": 1 / 6}, 18, 1),
    "HardSwish": ("HardSwish", {"x": _f(3, 4) * 4}, {}, {}, 18, 1),
    "LeakyRelu": ("LeakyRelu", {"x": _f(3, 4)}, {}, {"alpha": 0.2}, 18, 1),
    "PRelu": ("PRelu", {"x": _f(2, 3, 2, 2)}, {"s": _f(3, 1, 1)}, {}, 18, 1),
    "Elu": ("Elu", {"x": _f(3, 4)}, {}, {"alpha": 0.7}, 18, 1),
    "Selu": ("Selu", {"x": _f(3, 4)}, {}, {}, 18, 1),
    "Gelu_tanh": ("Gelu", {"x": _f(3, 4)}, {}, {"approximate": "tanh"}, 20, 1),
    "Softplus": ("Softplus", {"x": _f(3, 4)}, {}, {}, 18, 1),
    "Where_Equal_inputs": ("Where", {"c": _f(3, 4) > 0, "a": _f(3, 4)}, {"b": np.array(0.5, np.float32)}, {}, 18, 1),
    "Equal_int": ("Equal", {"a": _i([[1, 2], [3, 4]])}, {"b": _i([2])}, {}, 18, 1),
    "Div_int_truncates": ("Div", {"a": _i([7, -7, 6, -1])}, {"b": _i([2, 2, -4, 3])}, {}, 18, 1),
    "Mod_int": ("Mod", {"a": _i([7, -7, 6, -1])}, {"b": _i([3, 3, -4, 2])}, {}, 18, 1),
    "Sub_scalar_left": ("Sub", {"x": _f(3)}, {"one": np.array(1.0, np.float32)}, {}, 18, 1, ["one", "x"]),
    "Div_scalar_left": ("Div", {"x": _f(3) + 3}, {"two": np.array(2.0, np.float32)}, {}, 18, 1, ["two", "x"]),
    "Pow_Sqrt_chain": ("Pow", {"x": np.abs(_f(3, 4))}, {"e": np.array(1.5, np.float32)}, {}, 18, 1),
    "Max_variadic": ("Max", {"a": _f(3, 4), "b": _f(4), "c": _f(3, 1)}, {}, {}, 18, 1),
    "Min_variadic": ("Min", {"a": _f(3, 4), "b": _f(4)}, {}, {}, 18, 1),
    "Sum_variadic": ("Sum", {"a": _f(3, 4), "b": _f(4)}, {"c": _f(1)}, {}, 18, 1),
    "Mean_variadic": ("Mean", {"a": _f(3, 4), "b": _f(3, 4)}, {}, {}, 18, 1),
    "Cast_to_int": ("Cast", {"x": _f(3, 4) * 5}, {}, {"to": TensorProto.INT64}, 18, 1),
    "Trilu_lower": ("Trilu", {"x": _f(4, 4)}, {"k": np.array(1, np.int64)}, {"upper": 0}, 18, 1),
    "Range_const": ("Range", {}, {"a": np.array(2, np.int64), "b": np.array(11, np.int64),
                                  "d": np.array(3, np.int64)}, {}, 18, 1),
}
_NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
               np.dtype(np.bool_): TensorProto.BOOL}


def _single_op_model(tmp_path: Path, case: str) -> tuple[Path, tuple[torch.Tensor, ...]]:
    op, runtime, inits, attrs, opset, n_out, *order = OP_CASES[case]
    wires = order[0] if order else [*runtime, *inits]
    names = ["" if w in inits and inits[w] is None else w for w in wires]
    while names and not names[-1]:
        names.pop()
    node = helper.make_node(op, names, [f"y{k}" for k in range(n_out)], name=f"{case}_node", **attrs)
    graph_inputs = [helper.make_tensor_value_info(k, _NP_TO_ONNX[v.dtype], list(v.shape)) for k, v in runtime.items()]
    init_protos = [numpy_helper.from_array(v, k) for k, v in inits.items() if v is not None]
    graph = helper.make_graph([node], "g", graph_inputs, [helper.ValueInfoProto(name=f"y{k}") for k in range(n_out)],
                              initializer=init_protos)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))
    path = tmp_path / f"{case}.onnx"
    onnx.save(model, str(path))
    return path, tuple(torch.from_numpy(v) for v in runtime.values())


@pytest.mark.parametrize("case", list(OP_CASES))
def test_single_op_matches_onnxruntime(tmp_path: Path, case: str) -> None:
    path, inputs = _single_op_model(tmp_path, case)
    gm, example = import_onnx(path)
    assert [tuple(x.shape) for x in example] == [tuple(x.shape) for x in inputs]
    ours, theirs = _run(gm, inputs), _ort(path, inputs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, **TOL)


def test_op_table_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "onnx.md").read_text()
    missing = [op for op in OPS if f"`{op}`" not in doc]
    assert not missing
