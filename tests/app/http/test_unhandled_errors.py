"""A bug (an unhandled exception) answers 500 with the JSON error body, and costs no other request.

uvicorn closes a keep-alive connection after an exception escaped the app, even though the app's handler
already answered 500: the answer must then say `Connection: close`, or the client's next request on that
connection meets a reset. A route that raises is added to the real app, served by a real uvicorn.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import free_port, make_settings

from app.main import create_app
from app.process.connections import GuardedHttpToolsProtocol

BUG_PATH = "/test-only/bug"


@pytest.fixture(scope="module")
def buggy_server(checkpoints_dir: Path) -> Iterator[int]:
    app = create_app(make_settings(checkpoints_dir))

    @app.get(BUG_PATH)
    async def bug() -> None:
        raise RuntimeError("a bug in a route")

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=GuardedHttpToolsProtocol, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=60)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes] | None:
    """One HTTP/1.1 answer with a Content-Length from the socket; None if the server closed it first."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside a body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


def test_a_500_says_connection_close_or_keeps_the_connection_usable(buggy_server: int) -> None:
    with socket.create_connection(("127.0.0.1", buggy_server), timeout=30) as sock:
        sock.sendall(request(BUG_PATH))
        answer = read_response(sock)
        assert answer is not None, "no answer to the request that hit the bug"
        status, headers, body = answer
        assert status == 500 and b'"internal_error"' in body and b"a bug in a route" not in body
        closing = headers.get("connection", "").lower() == "close"
        if closing:  # announced: the server closes, and the client knows to open a new connection
            assert read_response(sock) is None
            return
        sock.sendall(request("/healthz"))  # not announced: the same connection must answer the next request
        follow_up = read_response(sock)
        assert follow_up is not None, "the 500 did not say Connection: close, and the connection then died"
        assert follow_up[0] == 200


def test_a_keep_alive_client_s_next_request_succeeds_after_a_500(buggy_server: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{buggy_server}", timeout=30) as client:
        for _ in range(3):
            assert client.get(BUG_PATH).status_code == 500
            assert client.get("/healthz").status_code == 200
