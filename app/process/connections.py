"""Deadlines for slow clients and a cap on open connections, where uvicorn has none.

uvicorn closes a keep-alive connection that stays idle after an answer (`timeout_keep_alive`), but
nothing bounds a connection that is opened and says nothing, or that sends its request headers one
line a second, or its body one byte at a time: each such connection holds a file descriptor (and a
little memory) for as long as the client likes, and a few thousand of them exhaust the process. So:

- **Header deadline** (`AE_HEADER_TIMEOUT_S`): a new connection, and every later request on it from
  its first byte, must bring the request's complete headers within this; else the server answers
  408 `request_timeout` and closes the connection. (Idle time between requests is bounded by the
  keep-alive timeout, `AE_KEEP_ALIVE_S`.)
- **Body deadline** (`AE_BODY_TIMEOUT_S`): the body must be complete within this after the headers.
  Where the app is reading it, the request pipeline (app.http.middleware) raises `BodyTimeout` inside the
  route, which answers 408 like any other error (logged and counted). If the app is not reading it (it answered without
  the body, or is stuck), the protocol closes the connection a moment later, with a 408 when no
  answer has started.
- **Connection cap** (`AE_MAX_CONNECTIONS`): at the cap, a new connection first makes room by
  evicting the connection that has waited longest for its request's headers, if that has waited more
  than `EVICT_AFTER_S` (it gets the 408 of its deadline early), so that clients dripping headers cannot
  keep out prompt ones such as health probes; when no connection is that late (they are all being
  served), the new one is answered 503 `too_many_connections` (`Retry-After: 1`) at once and closed.

At shutdown, a connection that has not carried a request yet gets `SHUTDOWN_GRACE_S` for its first
request to arrive (it is then answered and closed) instead of being closed under it, as uvicorn would.

Refusals written here are JSON in the service's error shape (app.http.error_handlers.error_json). The
connection is then half-closed (FIN after the answer) and what the client still sends is read and
dropped for a moment before the socket is closed: closing a socket with unread data makes the kernel
send a reset, which can destroy the answer in the client's buffers before it reads it.

The deadlines and the cap live in the HTTP protocol (`GuardedHttpToolsProtocol`, a subclass of
uvicorn's httptools protocol, which uvicorn uses by default when httptools is installed, as it is
here). `ae-serve` uses it; with plain uvicorn pass `--http app.process.connections:GuardedHttpToolsProtocol`.
It reads its limits from the same `AE_*` settings as the app.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from functools import cache
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.errors import BodyTimeout, HeaderTimeout, ServiceError, TooManyConnections
from app.http.error_handlers import error_json
from app.process.front_door import FrontDoor, front_door_of
from app.settings import settings_from_environment

# After a refusal, what the client still sends is dropped for this long before the socket is closed.
LINGER_S = 1.0
# The protocol's own body deadline comes this much after the app's (app.http.middleware), so that where the app
# reads the body, the app answers the 408 (and logs and counts it).
BODY_GRACE_S = 1.0
# At the connection cap, a connection that has waited this long for its headers may be evicted.
EVICT_AFTER_S = 1.0
# At shutdown, a connection that has not carried a request yet gets this long for its first one to arrive.
SHUTDOWN_GRACE_S = 1.0


class ConnectionBook:
    """The connections of one server that the cap must know about, kept so that each question is O(1):
    those waiting for a request's headers, oldest first (a dict keeps insertion order), and those
    refused and lingering before they close (they do not count against the cap)."""

    def __init__(self) -> None:
        self.waiting: dict[GuardedHttpToolsProtocol, float] = {}  # -> loop time since when it waits
        self.lingering: set[GuardedHttpToolsProtocol] = set()
        self.front_door: FrontDoor | None = None  # the app's early refusals (app.process.front_door), once found

    def oldest_waiting(self) -> GuardedHttpToolsProtocol | None:
        return next(iter(self.waiting), None)


BOOKS: weakref.WeakKeyDictionary[ServerState, ConnectionBook] = weakref.WeakKeyDictionary()


def book_of(server_state: ServerState) -> ConnectionBook:
    book = BOOKS.get(server_state)
    if book is None:
        book = BOOKS[server_state] = ConnectionBook()
    return book


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    keep_alive_s: float
    max_connections: int


@cache
def connection_limits() -> ConnectionLimits:
    """The limits of this process, from its AE_* settings (read once)."""
    settings = settings_from_environment()
    return ConnectionLimits(
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        keep_alive_s=settings.keep_alive_s,
        max_connections=settings.max_connections,
    )


def error_answer(error: ServiceError) -> bytes:
    """A complete HTTP/1.1 answer of `error`, in the service's error shape, that closes its connection."""
    body = error_json(error)
    headers = {"content-type": "application/json", "content-length": str(len(body)), "connection": "close"}
    headers |= {name.lower(): value for name, value in error.headers.items()}
    lines = [
        STATUS_LINE[error.status_code],
        *(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items()),
    ]
    return b"".join(lines) + b"\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a body deadline and a connection cap."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = connection_limits()
        self.timeout_keep_alive = self.limits.keep_alive_s  # type: ignore[assignment]  # uvicorn's own timer
        self.book = book_of(server_state)
        self.deadline: asyncio.TimerHandle | None = None
        self.refused = False  # an answer that closes the connection was written here; the rest is dropped
        self.skipping: bool | None = None  # a request refused at the front door: its body is dropped (value:
        # whether the connection stays open after it)
        self.closing = False  # the server is shutting down: the request now arriving is the last one

    # -- the connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections and not self.make_room():
            limit = self.limits.max_connections
            self.refuse(TooManyConnections(f"this server process holds {limit} connections, its limit; retry later"))
            return
        self.await_headers()

    def make_room(self) -> bool:
        """At the cap: evict the connection waiting longest for its headers, if it has waited over
        EVICT_AFTER_S and no answer is being written on it; False when there is none to evict."""
        if len(self.connections) - len(self.book.lingering) <= self.limits.max_connections:
            return True  # over the cap only by refused connections about to close
        oldest = self.book.oldest_waiting()
        if oldest is None or self.loop.time() - self.book.waiting[oldest] < EVICT_AFTER_S:
            return False
        if oldest.cycle is not None and not oldest.cycle.response_complete:
            return False  # an answer is being written on it (a pipelined request waits): not that one
        oldest.refuse(HeaderTimeout("the server is at its connection limit and this request's headers are late"))
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.clear_deadline()
        self.book.waiting.pop(self, None)
        self.book.lingering.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # read and dropped: the answer has been written
        super().data_received(data)

    # -- httptools callbacks: where a request's headers and body begin and end -----------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self not in self.book.waiting:  # the first byte of a later request on this connection
            self.await_headers()

    def on_headers_complete(self) -> None:
        if self.refused_at_front_door():
            return
        super().on_headers_complete()
        self.book.waiting.pop(self, None)
        if self.closing and self.cycle is not None:  # the server is shutting down: this is the last request
            self.cycle.keep_alive = False
        self.set_deadline(self.limits.body_timeout_s + BODY_GRACE_S, self.body_overdue)

    def on_body(self, body: bytes) -> None:
        if self.skipping is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.skipping is not None:
            self.front_door_request_done(keep_alive=self.skipping)
            return
        super().on_message_complete()
        self.clear_deadline()

    # -- refusals at the front door (app.process.front_door) -------------------------------------------------

    def refused_at_front_door(self) -> bool:
        """Answer a request admission control refuses now with its 503 before building it; False: the normal
        path (also for a request pipelined behind an answer still being written, or at shutdown)."""
        door = self.book.front_door
        if door is None:
            door = self.book.front_door = front_door_of(self.app)
            if door is None:
                return False
        if self.closing or self.expect_100_continue or (self.cycle is not None and not self.cycle.response_complete):
            return False
        parsed = httptools.parse_url(self.url)
        if b"%" in parsed.path or self.root_path:
            return False
        method = self.parser.get_method().decode("ascii")
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        default_headers = self.server_state.default_headers
        path = parsed.path.decode("ascii")
        refusal = door.refusal(method, path, parsed.query or b"", self.headers, keep_alive, default_headers)
        if refusal is None:
            return False
        answer, keep_alive = refusal
        self.book.waiting.pop(self, None)
        self.skipping = keep_alive
        self.transport.write(answer)
        # The body is read past (on_body drops it) within the body deadline; then the connection is idle.
        self.set_deadline(self.limits.body_timeout_s + BODY_GRACE_S, self.transport.close)
        return True

    def front_door_request_done(self, keep_alive: bool) -> None:
        """The refused request's body has been read past: close, or wait for the next request as uvicorn does."""
        self.skipping = None
        self.clear_deadline()
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()
            return
        if self.timeout_keep_alive_task is None and not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    # -- shutdown ------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn's shutdown closes a connection at once unless a request is being answered. A connection
        that has not carried a request yet was opened for one that is on its way (or half arrived): it gets
        SHUTDOWN_GRACE_S to arrive, and is then answered and closed, instead of being closed under it."""
        if self.cycle is None and not self.refused and not self.transport.is_closing():
            self.closing = True
            self.set_deadline(SHUTDOWN_GRACE_S, self.transport.close)
            return
        super().shutdown()

    # -- deadlines -----------------------------------------------------------------------------------

    def await_headers(self) -> None:
        self.book.waiting.pop(self, None)  # re-inserted last: the most recent
        self.book.waiting[self] = self.loop.time()
        self.set_deadline(self.limits.header_timeout_s, self.headers_overdue)

    def set_deadline(self, seconds: float, callback: Any) -> None:
        self.clear_deadline()
        self.deadline = self.loop.call_later(seconds, callback)

    def clear_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def headers_overdue(self) -> None:
        self.deadline = None
        if self.transport.is_closing() or self.refused:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # An answer to an earlier request is still being written: close once it is sent, never cut it.
            self.cycle.keep_alive = False
            self.book.waiting.pop(self, None)
            return
        seconds = self.limits.header_timeout_s
        self.refuse(HeaderTimeout(f"the request's headers did not arrive within {seconds:g} s"))

    def body_overdue(self) -> None:
        """The body is still incomplete and the app did not answer with a 408 itself (it is not reading)."""
        self.deadline = None
        cycle = self.cycle
        if self.transport.is_closing() or self.refused or cycle is None:
            return
        if cycle.response_complete:  # answered without reading the body: the rest need not arrive
            self.transport.close()
        elif cycle.response_started:  # an answer is being written: the connection closes after it
            cycle.keep_alive = False
        else:
            cycle.disconnected = True  # the app's later messages are dropped; it reads a disconnect
            cycle.message_event.set()
            seconds = self.limits.body_timeout_s
            self.refuse(BodyTimeout(f"the request's body did not arrive within {seconds:g} s"))

    # -- refusing ------------------------------------------------------------------------------------

    def refuse(self, error: ServiceError) -> None:
        """Write `error` as a closing answer, half-close, drop what still arrives, and close after LINGER_S."""
        self.refused = True
        self.book.waiting.pop(self, None)
        self.book.lingering.add(self)
        self.clear_deadline()
        self._unset_keepalive_if_required()
        self.transport.write(error_answer(error))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self.deadline = self.loop.call_later(LINGER_S, self.transport.close)
