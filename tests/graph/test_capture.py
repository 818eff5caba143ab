import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnninfer import zoo
from dnninfer.errors import UserError
from dnninfer.graph import Rule, capture
from dnninfer.graph.flops import UnknownOpWarning


@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_model_is_captured_and_annotated(name, graph_of):
    model, inputs, graph, ref = graph_of(name)
    compute = graph.compute_nodes()
    assert compute, name
    assert all((n.kind and n.shape is not None) or n.kind in ("shape",) for n in compute)
    assert graph.total_flops > 0
    assert graph.param_count == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        out = graph(*inputs)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 16, 3, padding=1),
        nn.Conv2d(16, 32, 5, stride=2, padding=2, bias=False),
        nn.Conv2d(32, 32, 3, groups=32, padding=1),
        nn.Conv2d(32, 64, (1, 7), padding=(0, 3), groups=4),
    ],
)
def test_conv_flops_equal_analytic_formula(conv):
    x = torch.randn(2, conv.in_channels, 20, 20)
    g = capture(nn.Sequential(conv), (x,))
    (node,) = g.compute_nodes()
    n, c_out, h, w = conv(x).shape
    kh, kw = conv.kernel_size
    assert node.kind == "conv"
    assert node.flops == 2 * n * c_out * h * w * (conv.in_channels // conv.groups) * kh * kw
    assert node.param_bytes == 4 * sum(p.numel() for p in conv.parameters())
    assert node.out_bytes == 4 * n * c_out * h * w


def test_linear_and_matmul_flops_equal_analytic_formula():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 48)

        def forward(self, x, y):
            return self.fc(x) @ y, F.linear(x, self.fc.weight)

    x, y = torch.randn(5, 7, 64), torch.randn(48, 9)
    g = capture(M(), (x, y))
    by_kind = {n.kind: n for n in g.compute_nodes() if n.kind in ("linear", "matmul")}
    assert by_kind["linear"].flops == 2 * 5 * 7 * 64 * 48
    assert by_kind["matmul"].flops == 2 * 5 * 7 * 9 * 48
    functional = [n for n in g.compute_nodes() if n.target == "linear"]
    assert functional and functional[0].flops == 2 * 5 * 7 * 64 * 48


def test_pool_bn_act_add_cat_attention_are_counted():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(4)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x, q):
            a = self.pool(torch.relu(self.bn(x)))
            b = torch.cat([a, a], 1) + 1
            att = F.scaled_dot_product_attention(q, q, q)
            return b, att

    x, q = torch.randn(1, 4, 8, 8), torch.randn(2, 3, 10, 16)
    g = capture(M(), (x, q))
    flops = {n.kind: n.flops for n in g.compute_nodes()}
    assert flops["bn"] == 2 * x.numel()
    assert flops["act"] == x.numel()
    assert flops["pool"] == 4 * 4 * 4 * 4  # out elements x kernel area
    assert flops["cat"] == 0
    assert flops["add"] == 2 * 4 * 4 * 4
    assert flops["attention"] == 4 * 6 * 10 * 10 * 16 + 3 * 6 * 10 * 10


class Branchy(nn.Module):
    """symbolic_trace cannot branch on x.dim(); torch.export specialises it away."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        if x.dim() == 4:
            x = torch.relu(self.conv(x))
        return self.fc(x.mean(dim=(2, 3)))


def test_export_fallback_captures_what_fx_cannot():
    m, x = Branchy().eval(), torch.randn(1, 3, 10, 10)
    g = capture(m, (x,))
    assert g.method == "export"
    conv = next(n for n in g.compute_nodes() if n.kind == "conv")
    assert conv.flops == 2 * 8 * 8 * 8 * 3 * 9
    assert conv.param_bytes == 4 * (8 * 3 * 9 + 8)
    torch.testing.assert_close(g(x), m(x))
    names = [n.name for n in g.compute_nodes()]
    stages = g.split({n: int(i >= len(names) // 2) for i, n in enumerate(names)})
    torch.testing.assert_close(g.run_stages(stages, x), m(x), rtol=1e-5, atol=1e-5)


def test_untraceable_model_is_a_user_error():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x - 1

    with pytest.raises(UserError, match="cannot be captured"):
        capture(DataDependent(), (torch.randn(3),))


def test_op_without_rule_names_node_and_can_be_overridden():
    class M(nn.Module):
        def forward(self, x):
            return torch.special.bessel_j0(x)

    with pytest.warns(UnknownOpWarning, match="special_bessel_j0"):
        g = capture(M(), (torch.randn(4, 5),))
    node = g.compute_nodes()[0]
    assert node.flops == 20 and node.flops_estimated  # one per output element, flagged
    g = capture(M(), (torch.randn(4, 5),), flops_rules={"special_bessel_j0": Rule("act", lambda c: 7)})
    assert g.compute_nodes()[0].flops == 7


def test_resnet18_chain_cuts_at_articulation_points_with_true_bytes(graph_of):
    _, _, g, _ = graph_of("resnet18")
    blocks = g.chain()
    assert sum(b.flops for b in blocks) == sum(n.flops for n in g.compute_nodes())
    assert [n for b in blocks for n in b.nodes] == [n.name for n in g.compute_nodes()]
    # stem output (64x56x56 fp32) and each stage's output are single-tensor cuts
    sizes = {b.out_bytes for b in blocks}
    for c, hw in ((64, 56), (128, 28), (256, 14), (512, 7)):
        assert c * hw * hw * 4 in sizes
    assert blocks[-1].out_bytes == 1000 * 4


@pytest.mark.parametrize("name", ["googlenet", "mobilenet_v2", "bert_encoder"])
def test_chain_cut_bytes_equal_what_a_split_really_sends(name, graph_of):
    _, inputs, g, _ = graph_of(name)
    blocks = g.chain()
    assert len(blocks) > 3
    mid = len(blocks) // 2
    labels = [0 if i <= mid else 1 for i in range(len(blocks))]
    first, _ = g.split(g.blocks_to_assignment(blocks, labels))
    with torch.no_grad():
        outs = first(*inputs)
    sent = sum(t.numel() * t.element_size() for t in outs if isinstance(t, torch.Tensor))
    assert sent == blocks[mid].out_bytes


def test_capture_rejects_non_module():
    with pytest.raises(UserError, match=r"torch\.nn\.Module"):
        capture(lambda x: x, (torch.randn(2),))


def test_vgg16_total_flops_match_published_order():
    # VGG-16 is quoted at 15.5 GMACs for 224x224; with 2 FLOPs per MAC that is ~31 GFLOPs.
    g = capture(zoo.build_model("vgg16"), zoo.example_inputs("vgg16"))
    macs = sum(n.flops for n in g.compute_nodes() if n.kind in ("conv", "linear")) / 2
    assert math.isclose(macs / 1e9, 15.47, rel_tol=0.01)
