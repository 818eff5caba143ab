"""Processes and CPU shares of the testbed, through cgroup v1.

* Every process the testbed starts (the Ray head, one Ray node per device, and all their children)
  runs in one `pids` cgroup, so `stop_all` ends exactly those processes, by PID, and nothing else
  on the machine (Ray's own stop command would end every Ray process here).
* Each processing unit gets a `cpu` cgroup whose CFS quota is its emulated speed in host cores;
  the PU's single-threaded actor moves itself in. A short period keeps a short stage from running
  at full speed for a burst and then stalling.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from dnninfer.errors import UserError
from dnninfer.testbed.net import PREFIX

CGROUP_ROOT = Path("/sys/fs/cgroup")
PIDS = CGROUP_ROOT / "pids" / PREFIX
CPU = CGROUP_ROOT / "cpu" / PREFIX
#: CFS period bounds: a few ms, but long enough that the kernel's 1 ms minimum quota fits
MIN_PERIOD_US, MAX_PERIOD_US, MIN_QUOTA_US = 5_000, 100_000, 1_000


def check_host() -> None:
    """Root and the two cgroup v1 hierarchies; a clear error otherwise (the testbed cannot fake them)."""
    if os.geteuid() != 0:
        raise UserError("testbed: needs root (network namespaces, tc and cgroups)")
    for hierarchy in ("pids", "cpu"):
        if not (CGROUP_ROOT / hierarchy / "cgroup.procs").exists():
            raise UserError(f"testbed: needs the cgroup v1 `{hierarchy}` hierarchy at {CGROUP_ROOT / hierarchy}")


def cpu_key(target: str) -> str:
    """Cgroup folder name of a `node/pu` target."""
    return target.replace("/", "__")


def period_quota(cores: float) -> tuple[int, int]:
    """(period, quota) in µs giving `cores` of CPU time, with the shortest period the 1 ms minimum
    quota allows."""
    if not 0 < cores <= 1.0:
        raise UserError(f"testbed: a processing unit's share must be in (0, 1] core, got {cores:.3g}")
    period = min(MAX_PERIOD_US, max(MIN_PERIOD_US, math.ceil(MIN_QUOTA_US / cores)))
    return period, max(MIN_QUOTA_US, round(cores * period))


def make_cpu_groups(shares: Mapping[str, float]) -> dict[str, dict[str, int]]:
    """One cpu cgroup per target with its quota; returns target -> {period_us, quota_us}."""
    out = {}
    CPU.mkdir(exist_ok=True)
    for target, cores in shares.items():
        period, quota = period_quota(cores)
        d = CPU / cpu_key(target)
        d.mkdir(exist_ok=True)
        (d / "cpu.cfs_period_us").write_text(str(period))
        (d / "cpu.cfs_quota_us").write_text(str(quota))
        out[target] = {"period_us": period, "quota_us": quota}
    return out


def join_cpu_group(target: str, pid: int | None = None) -> None:
    """Move a process (default: this one, all its threads) into the target's cpu cgroup."""
    (CPU / cpu_key(target) / "cgroup.procs").write_text(str(pid or os.getpid()))


def spawn(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> int:
    """Start a process in a new session inside the testbed's pids cgroup; returns its PID."""
    PIDS.mkdir(exist_ok=True)
    procs = PIDS / "cgroup.procs"

    def enter() -> None:  # runs in the child before exec: it and everything it starts are ours
        procs.write_text(str(os.getpid()))

    with open(log, "ab") as f:
        p = subprocess.Popen(list(argv), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, preexec_fn=enter, env=dict(env) if env else None)
    return p.pid


def tracked() -> list[int]:
    """PIDs of every live process the testbed started (and their children)."""
    try:
        return [int(x) for x in (PIDS / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def stop_all(grace_s: float = 5.0) -> None:
    """SIGTERM every tracked process, SIGKILL what is left after `grace_s`; then remove our cgroups."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        for pid in tracked():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while tracked() and time.monotonic() < deadline:
            time.sleep(0.1)
    remove_groups()


def remove_groups() -> None:
    """Remove our cgroup folders (a cgroup with live processes cannot be removed: kill first)."""
    for root in (CPU, PIDS):
        if not root.exists():
            continue
        for sub in sorted(root.iterdir()):
            if sub.is_dir():
                for pid in (sub / "cgroup.procs").read_text().split():  # back to the root group
                    with contextlib.suppress(OSError):
                        (root.parent / "cgroup.procs").write_text(pid)
                sub.rmdir()
        if not tracked() or root != PIDS:
            try:
                root.rmdir()
            except OSError as e:
                raise UserError(f"testbed: cannot remove cgroup {root}: {e.strerror}") from None


def leftovers() -> dict[str, list[str]]:
    """Our cgroups and tracked processes that exist now."""
    groups = [str(p) for p in (CPU, PIDS) if p.exists()]
    return {"cgroups": groups, "processes": [str(p) for p in tracked()]}
