"""The public API (dnninfer.api) on models nobody in the zoo wrote, each verb checked against the
model's own output, each check with a negative control that shows it can fail."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import dnninfer
from dnninfer.errors import UserError
from user_models import three_branch, unet

ROOT = Path(__file__).resolve().parents[1]
MCU_CNN = str(ROOT / "tests" / "user_mcu_cnn.py")


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return bool(torch.allclose(a, b, atol=tol, rtol=tol))


def _perturbed(model: nn.Module) -> nn.Module:
    """The same model with one weight nudged: every equivalence check below must reject it."""
    bad = copy.deepcopy(model)
    w = next(p for p in bad.parameters() if p.dim() > 1)
    with torch.no_grad():
        w.view(-1)[0] += 0.5
    return bad


@pytest.fixture(scope="module", params=["unet", "three_branch"])
def user_model(request):
    model, inputs = {"unet": unet, "three_branch": three_branch}[request.param]()
    with torch.no_grad():
        ref = model(*inputs)
    return request.param, model, inputs, ref


def test_import_dnninfer_pulls_in_neither_torch_nor_fastapi():
    code = "import sys, dnninfer; print(sorted(m for m in ('torch', 'fastapi') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # the verb wins over the same-named subpackage, which stays importable by its full name
    from dnninfer.partition.plan import Plan  # noqa: F401

    assert dnninfer.partition is dnninfer.api.partition and dnninfer.schedule is dnninfer.api.schedule
    assert set(dnninfer.api.__all__) == set(dnninfer._API)


def test_capture_equals_the_model(user_model):
    _name, model, inputs, ref = user_model
    g = dnninfer.capture(model, inputs)
    assert g.total_flops > 0 and len(g.compute_nodes()) >= 5
    with torch.no_grad():
        assert _close(g(*inputs), ref)
        assert not _close(dnninfer.capture(_perturbed(model), inputs)(*inputs), ref)  # negative control


def test_partition_runs_equal_to_the_model_and_round_trips_through_json(user_model):
    _name, model, inputs, ref = user_model
    plan = dnninfer.partition(model, inputs, "edge3", profile="flops")
    text = plan.explain()
    assert plan.strategy == "hidp" and "predicted" in text and "part 0" in text
    out = plan.run(*inputs, sleep=False)
    assert _close(out.output, ref)
    assert not _close(plan.run(*inputs, sleep=False).output, _perturbed(model)(*inputs).detach())
    back = dnninfer.Partition.from_json(plan.to_json(), model, inputs, profile="flops")
    assert back.to_dict() == plan.to_dict()
    slow = dnninfer.partition(model, inputs, "edge3", profile="flops", bandwidth_mbps=1, strategy="all-offload")
    again = dnninfer.Partition.from_json(slow.to_json(), model, inputs, profile="flops")
    assert again.to_dict() == slow.to_dict() and again.latency_ms == slow.latency_ms  # the 1 Mbit/s link too
    assert _close(back.run(*inputs, sleep=False).output, ref)


def test_plan_json_refuses_other_versions_and_other_models():
    model, inputs = three_branch()
    d = dnninfer.partition(model, inputs, "edge3", profile="flops").to_dict()
    with pytest.raises(UserError, match="format 'dnninfer-plan/1'"):
        dnninfer.Partition.from_json({**d, "format": "dnninfer-plan/0"}, model, inputs, profile="flops")
    other, other_inputs = unet()
    with pytest.raises(UserError, match=r"not in .*graph"):
        dnninfer.Partition.from_json(json.dumps(d), other, other_inputs, profile="flops")


def test_compare_partitions_sorts_every_strategy_and_each_plan_is_correct():
    model, inputs = three_branch()
    with torch.no_grad():
        ref = model(*inputs)
    plans = dnninfer.compare_partitions(model, inputs, "edge3", profile="flops")
    names = [p.strategy for p in plans]
    assert "hidp" in names and len(names) >= 5 and len(set(names)) == len(names)
    scores = [p.plan.score("latency") for p in plans]
    assert scores == sorted(scores)
    # HiDP is seeded with every baseline's plan, so no rival may beat it on its own objective
    hidp = plans[names.index("hidp")]
    assert all(hidp.latency_ms <= p.latency_ms * (1 + 1e-9) for p in plans)
    for p in plans:
        assert _close(p.run(*inputs, sleep=False).output, ref), p.strategy


def test_schedule_runs_equal_to_the_model(user_model):
    name, model, inputs, ref = user_model
    sched = dnninfer.schedule(model, inputs, profile=False)
    try:
        assert sum(len(s) for s in sched.streams) >= 5
        assert _close(sched.run(*inputs), ref)
        assert not _close(sched.run(*inputs), _perturbed(model)(*inputs).detach())
    finally:
        sched.close()
    if name == "three_branch":  # three independent branches: Opara puts them on more than one stream
        assert len(sched.streams) >= 2


def _with_quantized_weights(model: nn.Module, q: nn.Module) -> nn.Module:
    """The original model with each swapped layer's weight replaced by its quantised value."""
    from dnninfer.quant.quantizers import quant_layers

    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, layer in quant_layers(q):
            ref.get_submodule(name).weight.copy_(layer.quantized_weight())
    return ref


@pytest.mark.parametrize("config", [dnninfer.SignedBinaryConfig(), dnninfer.BinaryConfig(),
                                    dnninfer.TernaryConfig()], ids=lambda c: type(c).__name__)
def test_quantize_equals_the_model_with_quantised_weights(user_model, config):
    from dnninfer.quant.quantizers import quant_layers

    _name, model, inputs, _ = user_model
    q = dnninfer.quantize(model, config, inputs=inputs)
    layers = quant_layers(q)
    assert layers and all(m.method == config.method for _, m in layers)
    convs = [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert [n for n, _ in layers] == convs[1:-1]  # first and last kept in fp32 by default
    for _, m in layers:
        w = m.quantized_weight()
        if config.method == "signed":  # each filter {0, +s} or {0, -s}
            assert all(len(set(torch.unique(f).tolist()) - {0.0}) <= 1 for f in w)
        else:  # {-a, +a} (binary) or {-a, 0, +a} (ternary), one a per filter
            assert all(len(set(torch.unique(f.abs()).tolist()) - {0.0}) == 1 for f in w)
    with torch.no_grad():
        out = q(*inputs)
        assert _close(out, _with_quantized_weights(model, q)(*inputs))
        assert not _close(out, model(*inputs), 1e-3)  # the quantised model really differs


def test_quantize_filter_fn_picks_layers_and_refuses_what_is_not_a_config():
    from dnninfer.quant.quantizers import quant_layers

    model, _inputs = unet()
    q = dnninfer.quantize(model, dnninfer.BinaryConfig(first_last="quantize"),
                          filter_fn=lambda m, fqn: fqn.startswith("down"))
    assert [n for n, _ in quant_layers(q)] == ["down.1"]
    with pytest.raises(UserError, match="SignedBinaryConfig"):
        dnninfer.quantize(model, "signed")  # type: ignore[arg-type]


def test_rnsify_fp32_is_the_model_and_noiseless_rns_is_bit_exact_bfp(user_model):
    _name, model, inputs, ref = user_model
    with torch.no_grad():
        assert _close(dnninfer.rnsify(model, dnninfer.RNSConfig(mode="fp32"))(*inputs), ref)  # im2col GEMM
        rns = dnninfer.rnsify(model)(*inputs)
        bfp = dnninfer.rnsify(model, dnninfer.RNSConfig(mode="bfp"))(*inputs)
        noisy = dnninfer.rnsify(model, dnninfer.RNSConfig(sigma=2.0, seed=1))(*inputs)
    assert torch.equal(rns, bfp)
    assert not torch.equal(noisy, bfp)  # negative control: analog noise does change the result
    assert float((rns - ref).abs().max() / ref.abs().max()) < 0.1  # 6-bit BFP stays near FP32
    only = dnninfer.rnsify(model, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    from dnninfer.rns.layers import RNSConv2d

    assert not any(isinstance(m, RNSConv2d) for m in only.modules())


def test_plan_memory_on_a_user_model_file(tmp_path):
    m = dnninfer.load(MCU_CNN)
    with torch.no_grad():
        ref = m.model(*m.inputs)
    peaks = {p: dnninfer.plan_memory(m, planner=p).peak_bytes for p in ("naive", "tinyengine", "vmcu_fused")}
    assert peaks["vmcu_fused"] <= peaks["tinyengine"] < peaks["naive"]
    mp = dnninfer.plan_memory(m)
    out = mp.run(m.inputs[0])
    err = float((out - ref).abs().max() / ref.abs().max())
    assert err < 0.05, err
    assert float((mp.run(torch.zeros_like(m.inputs[0])) - ref).abs().max()) > 10 * err * ref.abs().max()
    c = mp.codegen(tmp_path)
    assert c.exists() and f"{mp.peak_bytes}" in c.read_text()
    with pytest.raises(UserError, match=r"over the budget of 100; the peak is set by layer '\S+'"):
        dnninfer.plan_memory(m, budget_bytes=100)


def test_plan_memory_refuses_the_unet_naming_its_transposed_conv():
    model, inputs = unet()
    with pytest.raises(UserError, match="up"):
        dnninfer.plan_memory(model, inputs)


def test_serve_a_user_classifier_answers_what_the_module_computes():
    import httpx
    import numpy as np

    from dnninfer.serving.images import make_jpeg
    from dnninfer.serving.models import UserClassifier
    from dnninfer.serving.preprocess import fast_preprocess
    from dnninfer.serving.runner import ServerThread

    model, inputs = three_branch()
    server = dnninfer.serve(model, inputs)
    body = make_jpeg(320, 240, seed=3)
    with ServerThread(server.app) as srv:
        r = httpx.post(f"{srv.url}/v1/models/ThreeBranch/infer", content=body,
                       headers={"content-type": "image/jpeg"}, timeout=60)
        listed = httpx.get(f"{srv.url}/v1/models").json()["models"]
    assert r.status_code == 200, r.text
    assert "ThreeBranch" in listed
    top = r.json()["top_k"]
    x = torch.from_numpy(np.ascontiguousarray(fast_preprocess(body).tensor)).permute(2, 0, 1)[None]
    with torch.no_grad():
        logits = UserClassifier(model, inputs[0])(x)[0]
    assert [t["class"] for t in top] == torch.topk(logits, 5).indices.tolist()
    assert abs(top[0]["logit"] - float(logits.max())) < 1e-3
    with pytest.raises(UserError, match=r"expected \(batch, classes\) logits"):
        dnninfer.serve(*unet())  # a segmentation net is not a classifier


def test_dpra_simulate_on_a_user_model(tmp_path):
    model, inputs = three_branch()
    out = dnninfer.dpra_simulate(model, inputs, slots=4, segments=3, ledger_path=tmp_path / "l.db",
                                 profile="flops")
    assert out["model"] == "ThreeBranch" and len(out["segments"]) == 3
    assert out["ledger"]["blocks"] >= 1 and out["ledger"]["rejected"] == []
    assert out["ledger"]["max_abs_err"] < 1e-5  # every executed split equals the whole model
    base = dnninfer.dpra_simulate(model, inputs, slots=4, segments=3, method="all_local", execute=False,
                                  profile="flops")
    assert set(base["split_histogram"][:-1]) == {0}  # all_local never splits: a check that can tell


def test_cbnet_on_the_users_own_images():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target)
    cfg = dnninfer.CBNetConfig(epochs=8, ae_epochs=8, autoencoders=("dense",), image_size=16, lr=3e-3)
    res = dnninfer.cbnet((x[:1200], y[:1200]), (x[1200:], y[1200:]), cfg)
    s = res.summary()
    assert s["image_shape"] == [1, 16, 16] and s["test"] == len(y) - 1200
    xt = torch.nn.functional.interpolate(x[1200:], size=(16, 16), mode="bilinear").clamp(0, 1)
    acc = float((res.predict(xt) == y[1200:]).float().mean())
    assert abs(acc - s["accuracy"]["cbnet"]) < 0.02 and acc > 0.75  # 10 classes: chance is 0.1
    with pytest.raises(UserError, match="expected float images"):
        dnninfer.cbnet((x[:10, 0], y[:10]), (x[10:20], y[10:20]), cfg)


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_every_python_block_of_the_readme_runs(tmp_path):
    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 7, "README's Python section lost its examples"
    # one fresh interpreter, blocks in order as a reader would type them, in an empty directory
    script = tmp_path / "readme.py"
    script.write_text("\n".join(f"# -- README python block {i}\n{b}" for i, b in enumerate(blocks)))
    r = subprocess.run([sys.executable, "-W", "error::UserWarning", str(script)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_the_readme_check_fails_on_a_broken_block(tmp_path):
    (code,) = _python_blocks("```python\nimport dnninfer\ndnninfer.no_such_verb()\n```\n")
    (tmp_path / "broken.py").write_text(code)
    r = subprocess.run([sys.executable, "broken.py"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and "no_such_verb" in r.stderr


def test_dnninfer_serve_takes_a_user_model_file():
    from dnninfer.serving.cli import user_classifier
    from dnninfer.serving.models import UserClassifier

    name, clf = user_classifier(MCU_CNN)
    assert name == "user_mcu_cnn" and isinstance(clf, UserClassifier) and clf.classes == 10
    assert clf(torch.zeros(2, 3, 224, 224)).shape == (2, 10)  # crops resized to the model's 32x32
    assert user_classifier("resnet18") == ("resnet18", None)  # zoo names are served as before


# -- the same verbs on ONNX files (imported to torch ops, no ONNX at run time) ---------------------
@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    import user_mcu_cnn

    folder = tmp_path_factory.mktemp("onnx")
    made = {}
    for name, (model, inputs) in {"unet": unet(), "three_branch": three_branch(),
                                  "mcu_cnn": (user_mcu_cnn.model(), user_mcu_cnn.example_inputs())}.items():
        path = folder / f"{name}.onnx"
        torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=17)
        with torch.no_grad():
            made[name] = (path, model, inputs, model(*inputs))
    return made


@pytest.mark.parametrize("name", ["unet", "three_branch"])
def test_every_graph_verb_on_an_onnx_file_equals_the_original_model(onnx_files, name):
    path, _, inputs, ref = onnx_files[name]
    m = dnninfer.load(path)
    assert m.name == name and not any("onnx" in str(n.target) for n in m.model.graph.nodes)
    with torch.no_grad():
        assert _close(dnninfer.capture(m)(*inputs), ref)
        assert _close(dnninfer.partition(m, inputs, "edge3", profile="flops").run(*inputs, sleep=False).output, ref)
        for p in dnninfer.compare_partitions(m, inputs, "edge3", profile="flops", bandwidth_mbps=5,
                                             strategies=["hidp", "coedge", "neurosurgeon"]):
            assert _close(p.run(*inputs, sleep=False).output, ref), p.strategy
        sched = dnninfer.schedule(m, inputs, profile=False)
        assert _close(sched.run(*inputs), ref)
        sched.close()
        assert _close(dnninfer.rnsify(m.model, dnninfer.RNSConfig(mode="fp32"))(*inputs), ref)
        q = dnninfer.quantize(m.model, dnninfer.SignedBinaryConfig())
        assert _close(q(*inputs), _with_quantized_weights(m.model, q)(*inputs))
        assert not _close(q(*inputs), ref, 1e-3)


def test_plan_memory_and_serve_on_onnx_files(onnx_files):
    from dnninfer.serving.cli import user_classifier

    path, _, inputs, ref = onnx_files["mcu_cnn"]
    mp = dnninfer.plan_memory(str(path))
    assert float((mp.run(inputs[0]) - ref).abs().max() / ref.abs().max()) < 0.05
    assert mp.peak_bytes == dnninfer.plan_memory(MCU_CNN).peak_bytes  # same plan as the torch model
    name, clf = user_classifier(str(path))
    assert name == "mcu_cnn" and clf.classes == 10
    with pytest.raises(UserError, match="ConvTranspose2d"):
        dnninfer.plan_memory(str(onnx_files["unet"][0]))
