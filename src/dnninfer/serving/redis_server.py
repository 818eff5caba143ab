"""Start and stop a private ``redis-server`` on 127.0.0.1 (tests, bench, ``serve --start-redis``).

No persistence (``--save ''``, ``--appendonly no``): the broker is an in-memory hop, and nothing is
written to disk. A free port is picked by binding port 0; if another process takes it before
Redis binds, the start is retried on a new port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "free_port", "redis_binary", "redis_missing_reason"]

_CANDIDATES = ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    return next((c for c in _CANDIDATES if os.access(c, os.X_OK)), None)


def redis_missing_reason() -> str | None:
    """``None`` when a redis-server binary exists, else why the Redis parts are skipped."""
    if redis_binary() is None:
        return ("redis-server binary not found on PATH or in /usr/bin, /usr/sbin "
                "(install it with `make sysdeps` or `apt-get install redis-server`)")
    return None


def _ping(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``with RedisServer() as r: r.url`` runs a throw-away redis-server for the block."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, start_timeout_s: float = 10.0) -> None:
        self.host, self.port, self.start_timeout_s = host, port, start_timeout_s
        self.proc: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError(redis_missing_reason())
        self._dir = tempfile.TemporaryDirectory(prefix="dnninfer-redis-")
        fixed = self.port is not None
        last = ""
        for _ in range(1 if fixed else 5):
            port = self.port if fixed else free_port(self.host)
            log = Path(self._dir.name) / "redis.log"
            argv = [binary, "--port", str(port), "--bind", self.host, "--save", "", "--appendonly", "no",
                    "--daemonize", "no", "--protected-mode", "yes", "--dir", self._dir.name,
                    "--logfile", str(log), "--loglevel", "warning"]
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + self.start_timeout_s
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _ping(self.host, port):
                    self.port = port
                    return self
                time.sleep(0.02)
            last = log.read_text(errors="replace")[-500:] if log.exists() else ""
            self._kill()
        self._cleanup()
        raise RuntimeError(f"redis-server did not start on {self.host}: {last.strip() or 'no log'}")

    def _kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)
        self.proc = None

    def _cleanup(self) -> None:
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._dir.cleanup()
            self._dir = None

    def stop(self) -> None:
        self._kill()
        self._cleanup()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
