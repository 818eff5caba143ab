"""B-DT: DPRA, Lyapunov DNN partitioning with a reputation-staked ledger (Deng et al., arXiv 2405.17914).

Its own area, beside ledger/ (which it mines blocks on): the controller (`dpra`), the run that
executes each slot's splits on a real model (`run`), `dnninfer bench dpra` (`bench`) and
`dnninfer dpra simulate` (`cli`). It uses no partition planner (only the FLOPs host-time estimate of
`dnninfer.partition.costmodel`), so it does not live in partition/.
"""
