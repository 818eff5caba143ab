"""The bench's bit-exactness check: noiseless RNS equals BFP-exact on every training GEMM."""

from dnninfer.rns.verify import GEMMS, gemm_bit_exact


def test_noiseless_rns_equals_bfp_on_every_gemm():
    assert gemm_bit_exact(seed=3) == dict.fromkeys(GEMMS, True)


def test_the_check_sees_a_different_numerics():  # negative control: FP8 rounds differently
    assert not any(gemm_bit_exact(seed=3, modes=("bfp", "fp8")).values())
