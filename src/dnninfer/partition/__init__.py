"""Partitioning algorithms: pure cost-model solvers (min-cut, chain DP) wrapped by the planners."""
