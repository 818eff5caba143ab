"""Mirage: residue-number-system (RNS) arithmetic for low-precision analog DNN training.

High-precision GEMMs are composed from several low-precision modular GEMMs (co-prime moduli, block
floating point, CRT reconstruction), as in Mirage (Demirkiran, Yang, Bunandar, Joshi; ISCA 2024,
arXiv 2311.17323). Modules: ``arith`` (moduli, conversion, CRT, RRNS), ``bfp`` (block floating
point), ``numerics`` (the five GEMM numerics), ``layers`` (RNSLinear / RNSConv2d, ``rnsify``),
``train`` (offline training on digits and MNIST-1D), ``photonic`` (analytical photonic-RNS vs
systolic-array model), ``bench`` and ``cli``. See docs/mirage.md.
"""

from dnninfer.rns.arith import ModuliSet, crt, from_residues, rrns_decode, special_moduli, to_residues
from dnninfer.rns.layers import RNSConv2d, RNSLinear, numerics_of, rnsify, set_numerics
from dnninfer.rns.numerics import MODES, Numerics, emu_matmul

__all__ = [
    "MODES",
    "ModuliSet",
    "Numerics",
    "RNSConv2d",
    "RNSLinear",
    "crt",
    "emu_matmul",
    "from_residues",
    "numerics_of",
    "rnsify",
    "rrns_decode",
    "set_numerics",
    "special_moduli",
    "to_residues",
]
