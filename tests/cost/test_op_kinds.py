"""The op kinds a device profile may name (cost/profiles.py, written out so that reading a profile
never imports torch) are exactly the kinds the FLOPs table produces."""

from dnninfer.cost.profiles import OP_KINDS
from dnninfer.graph.flops import MODULE_RULES, NAME_RULES


def test_op_kinds_match_the_flops_table():
    table = {r.kind for r in NAME_RULES.values()} | {r.kind for _, r in MODULE_RULES}
    assert table == OP_KINDS
