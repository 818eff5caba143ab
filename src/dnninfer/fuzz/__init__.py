"""Fuzz campaign over every input surface of dnninfer (docs/fuzz.md).

Surfaces: ``yaml`` (cluster/device profiles), ``model`` (the MODEL file argument), ``jpeg``
(request bodies to the serving app, both pipelines), ``ledger`` (files for ``ledger verify``) and
``cli`` (numeric option values). Each case is labelled when built (`classify`), run in-process under
a time limit, and classified as crash / hang / accepted_bad / bad_error / rejected_valid /
valid_mutant / ok. ``dnninfer bench fuzz [--quick]`` runs it (`bench`).
"""

from dnninfer.fuzz.campaign import SURFACES, run_campaign, run_surface, summarise
from dnninfer.fuzz.classify import Case, Result, Verdict, classify, run_case

__all__ = ["SURFACES", "Case", "Result", "Verdict", "classify", "run_campaign", "run_case", "run_surface",
           "summarise"]
