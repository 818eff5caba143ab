import pytest
import torch

from dnninfer.errors import UserError
from dnninfer.runtime import SimpleLink, run_inprocess


def three_stages(g):
    blocks = g.chain()
    third = len(blocks) // 3
    labels = [min(2, i // max(1, third)) for i in range(len(blocks))]
    return g.split(g.blocks_to_assignment(blocks, labels))


def test_inprocess_matches_whole_model_and_accounts_link_delay(graph_of):
    _, inputs, g, ref = graph_of("resnet18")
    stages = three_stages(g)
    link = SimpleLink(bandwidth_mbps=10, rtt_ms=4)
    r = run_inprocess(g, stages, inputs, placement=["a", "b", "c"], links=link, sleep=False)
    torch.testing.assert_close(r.output, ref, rtol=1e-5, atol=1e-5)
    hops = [(t.src, t.dst) for t in r.transfers]
    assert hops == [("a", "b"), ("b", "c"), ("c", "a")]
    for t in r.transfers:
        assert t.delay_s == pytest.approx(0.002 + t.nbytes * 8 / 10e6)
    assert r.transfers[-1].nbytes == 1000 * 4
    assert r.wall_s >= r.transfer_s
    assert r.emulated and "emulated" in r.summary()["note"]


def test_same_node_stages_send_nothing(graph_of):
    _, inputs, g, ref = graph_of("digits_cnn")
    stages = three_stages(g)
    r = run_inprocess(g, stages, inputs, placement=["a", "a", "a"], links=SimpleLink(1), sleep=False)
    assert r.bytes_sent == 0
    torch.testing.assert_close(r.output, ref)


def test_bad_placement_and_links_are_user_errors(graph_of):
    _, inputs, g, _ = graph_of("digits_cnn")
    stages = three_stages(g)
    with pytest.raises(UserError, match="placement"):
        run_inprocess(g, stages, inputs, placement=["a"])
    with pytest.raises(UserError, match="no link between"):
        run_inprocess(g, stages, inputs, placement=["a", "b", "c"], links={("a", "b"): SimpleLink(5)})
    with pytest.raises(UserError, match="bandwidth"):
        SimpleLink(-3)


def test_failing_stage_names_its_node(graph_of):
    _, _, g, _ = graph_of("digits_cnn")
    stages = three_stages(g)
    with pytest.raises(RuntimeError, match="stage 0 on node 'edge-1'"):
        run_inprocess(g, stages, (torch.randn(1, 3, 8, 8),), placement=["edge-1", "edge-2", "edge-3"])


@pytest.mark.parametrize(("bw", "rtt"), [(float("nan"), 0.0), (float("inf"), 0.0), (0.0, 0.0), (10.0, float("nan")),
                                         (10.0, float("inf")), (10.0, -1.0)])
def test_simple_link_refuses_nan_inf_and_nonpositive(bw, rtt):
    with pytest.raises(UserError, match="finite bandwidth > 0"):
        SimpleLink(bw, rtt)


def test_simple_link_accepts_finite_values_negative_control():
    assert SimpleLink(8.0, 2.0).transfer_s(1_000_000) == pytest.approx(1e-3 + 1.0)


def test_absurd_emulated_delay_is_a_user_error_only_when_sleeping(graph_of):
    """A link of 1e-12 Mbit/s is a valid number but would sleep for ages (or overflow time.sleep)."""
    _, inputs, g, _ = graph_of("digits_cnn")
    stages = three_stages(g)
    with pytest.raises(UserError, match=r"would take .* s, expected at most 3600 s"):
        run_inprocess(g, stages, inputs, placement=["a", "b", "c"], links=SimpleLink(1e-12))
    simulated = run_inprocess(g, stages, inputs, placement=["a", "b", "c"], links=SimpleLink(1e-12), sleep=False)
    assert simulated.wall_s > 3600  # simulated time is only added up, so any finite delay is fine
