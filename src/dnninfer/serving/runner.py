"""Run a server for a while and tear it down: in a thread (tests) or in a subprocess (bench).

``ServerThread`` binds the socket itself (port 0 = a free port, no race) and runs uvicorn on a
thread with its own event loop; ``stop()`` is the same graceful shutdown as SIGTERM
(``transport.DrainingServer``: mark the service draining, stop listening, answer in-flight requests
with ``Connection: close``, then the app's lifespan stops the service). ``ServerProcess`` starts
``python -m dnninfer.serving ...`` so the load generator does not share the server's GIL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dnninfer.serving.redis_server import free_port
from dnninfer.serving.transport import make_server, uvicorn_config

__all__ = ["ServerProcess", "ServerThread", "wait_healthy"]


def wait_healthy(base_url: str, timeout_s: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was healthy")
        try:
            r = httpx.get(f"{base_url}/health", timeout=2.0)
            if r.status_code == 200:
                return
            last = f"status {r.status_code}"
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}"
        time.sleep(0.05)
    raise RuntimeError(f"server at {base_url} not healthy after {timeout_s:g} s ({last})")


class ServerThread:
    """``with ServerThread(app) as s: httpx.get(s.url + "/health")``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, graceful_timeout_s: int = 30) -> None:
        self.app, self.host, self.port, self.graceful_timeout_s = app, host, port, graceful_timeout_s
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> ServerThread:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        service = getattr(getattr(self.app, "state", None), "service", None)
        read_timeout = service.cfg.read_timeout_s if service is not None else 10.0
        config = uvicorn_config(self.app, read_timeout, self.graceful_timeout_s, lifespan="on", timeout_keep_alive=30)
        self.server = make_server(self.app, config)

        def run() -> None:
            try:
                self.server.run(sockets=[sock])
            except BaseException as e:  # surfaced by start()/stop()
                self._error = e

        self.thread = threading.Thread(target=run, name=f"uvicorn-{self.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server thread did not start: {self._error!r}")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout_s)
            self.thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerProcess:
    """``python -m dnninfer.serving --port P ARGS...`` on 127.0.0.1; SIGTERM for a graceful stop."""

    def __init__(self, args: list[str], host: str = "127.0.0.1", env: dict[str, str] | None = None) -> None:
        self.args, self.host = list(args), host
        self.port = 0
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def launch(self) -> ServerProcess:
        """Start without waiting (several servers can start at once); ``wait()`` for health."""
        self.port = free_port(self.host)
        self._log = tempfile.NamedTemporaryFile(prefix="dnninfer-serve-", suffix=".log", delete=False)  # noqa: SIM115
        env = {**os.environ, **(self.env or {})}
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = [sys.executable, "-m", "dnninfer.serving", "--host", self.host, "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env)
        return self

    def wait(self, timeout_s: float = 90.0) -> ServerProcess:
        try:
            wait_healthy(self.url, timeout_s, self.proc)
        except RuntimeError as e:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"{e}; server log:\n{tail}") from None
        return self

    def start(self, timeout_s: float = 90.0) -> ServerProcess:
        return self.launch().wait(timeout_s)

    def log_tail(self, n: int = 2000) -> str:
        if self._log is None:
            return ""
        with contextlib.suppress(OSError):
            return Path(self._log.name).read_text(errors="replace")[-n:]
        return ""

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            with contextlib.suppress(OSError):
                os.unlink(self._log.name)
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
