"""uvicorn glue: a header read timeout and a shutdown that drains instead of resetting.

uvicorn's h11 protocol has a keep-alive timeout but no header timeout: a client that opens a
connection and sends half a request line holds the connection forever (300 such clients stayed
open indefinitely). ``TimedH11Protocol`` closes a connection whose request headers are not complete
``read_timeout_s`` after it opened (or after the first byte of a kept-alive connection's next
request), with a 408 if it had sent anything. The body's timeout lives in the app's admission
middleware (``server._Gate``), which can answer 408 through the app and free the admission slot.

``DrainingServer`` marks the service as draining the moment SIGTERM (or ``should_exit``) arrives,
before uvicorn stops listening, so every response from then on carries ``Connection: close``
(clients do not reuse a connection the server is about to close), and it lets the event loop read
what already arrived (queued connections, buffered requests) before uvicorn closes idle
connections: those requests get an answer, not a reset. New connections are refused once uvicorn
closes the listening socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["DrainingServer", "TimedH11Protocol", "make_server", "uvicorn_config"]

#: How long shutdown lets the loop read what already arrived before idle connections are closed.
SETTLE_S = 0.05


class TimedH11Protocol(H11Protocol):
    """h11 with a deadline on request headers (``read_timeout_s``, set per server by ``with_timeout``)."""

    read_timeout_s: float = 10.0

    @classmethod
    def with_timeout(cls, seconds: float) -> type[TimedH11Protocol]:
        return type(cls.__name__, (cls,), {"read_timeout_s": float(seconds)})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            self._disarm()
        elif self.conn.their_state is h11.IDLE:  # waiting for (the rest of) a request's headers
            if self.conn.trailing_data[0]:
                self._arm()  # no-op when armed: the deadline counts from the first byte, not the last
        else:
            self._disarm()  # headers complete; the body's deadline is the app's

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.read_timeout_s, self._headers_timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # it started a request: say why it is cut off
            msg = f"request headers not received within {self.read_timeout_s:g} s (server option --read-timeout)"
            body = json.dumps({"error": msg, "status": 408}, separators=(",", ":")).encode()
            head = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
            self.transport.write(head + body)
        self.transport.close()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, calling ``on_drain`` first on SIGTERM / SIGINT / ``should_exit``."""

    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._on_drain = on_drain or (lambda: None)

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._on_drain()  # a flag, safe from a signal handler; answers from now on say Connection: close
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: Any = None) -> None:
        self._on_drain()
        await asyncio.sleep(SETTLE_S)  # accept queued connections and parse requests already buffered
        await super().shutdown(sockets)


def uvicorn_config(app: Any, read_timeout_s: float, graceful_timeout_s: float, **kw: Any) -> uvicorn.Config:
    """The one uvicorn configuration every server uses (CLI, tests, bench subprocesses)."""
    kw.setdefault("log_level", "warning")
    kw.setdefault("access_log", False)
    return uvicorn.Config(app, http=TimedH11Protocol.with_timeout(read_timeout_s),
                          timeout_graceful_shutdown=max(1, round(graceful_timeout_s)), **kw)


def make_server(app: Any, config: uvicorn.Config) -> DrainingServer:
    """A ``DrainingServer`` that drains ``app.state.service`` when the app has one."""
    service = getattr(getattr(app, "state", None), "service", None)
    return DrainingServer(config, getattr(service, "begin_drain", None))
