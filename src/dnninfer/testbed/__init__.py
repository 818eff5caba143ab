"""Edge testbed: a real multi-node Ray cluster of throttled, link-shaped nodes on one machine.

`core.up/status/down` manage it; `runtime.TestbedRuntime` runs a partition plan on it. Needs root
(network namespaces, tc, cgroup v1).
"""
