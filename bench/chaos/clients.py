"""The chaos run's clients: one request on a raw connection (its fate known exactly: answered, lost or
refused), bounded client loops and their tally, and the requests they send."""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

HOST = "127.0.0.1"
ADMIN_KEY = "chaos-admin-key"
ANSWER_TIMEOUT_S = 60.0  # a request with no answer after this counts as lost (none should get near it)


# -- one request on a raw connection -------------------------------------------------------------------


class Lost(Exception):
    """The request was written, then the connection ended without a complete answer."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def closes(self) -> bool:
        return "close" in self.headers.get("connection", "").lower()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
        raise Lost(f"no answer: {type(exc).__name__}") from None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    try:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                body += (await reader.readexactly(size + 2))[:size]
                if size == 0:
                    break
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise Lost(f"answer cut short: {type(exc).__name__}") from None
    return Answer(status, headers, body)


def http_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {HOST}", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Tally:
    """What became of the requests of one fault's clients."""

    sent: int = 0
    answered: Counter[int] = field(default_factory=Counter)
    lost: int = 0
    refused: int = 0
    lost_at: list[float] = field(default_factory=list)  # time.monotonic() of each loss
    lost_how: list[str] = field(default_factory=list)  # what the client saw, per loss
    lost_on_old_connection: int = 0  # written on a connection that had already carried an answer

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": {str(status): count for status, count in sorted(self.answered.items())},
            "lost": self.lost,
            "lost_on_reused_connection": self.lost_on_old_connection,
            "refused_connections": self.refused,
        }


async def client_loop(
    port: int,
    make_request: Callable[[int], bytes],
    tally: Tally,
    stop: asyncio.Event,
    deadline: float,
    max_requests: int | None = None,
    stop_when_refused: bool = False,
    answers: list[Answer] | None = None,
) -> None:
    """One client: requests one after the other on a keep-alive connection (a new one after a
    `Connection: close`), until `stop`, `deadline`, `max_requests` or (optionally) a refused connect."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    carried = 0  # answers received on the current connection
    number = 0
    while not stop.is_set() and time.monotonic() < deadline and (max_requests is None or number < max_requests):
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
                carried = 0
            except OSError:
                tally.refused += 1
                if stop_when_refused:
                    return
                await asyncio.sleep(0.05)
                continue
        assert reader is not None
        number += 1
        tally.sent += 1
        try:
            writer.write(make_request(number))
            await writer.drain()
            answer = await asyncio.wait_for(read_answer(reader), ANSWER_TIMEOUT_S)
        except (Lost, ConnectionError, TimeoutError) as exc:
            tally.lost += 1
            tally.lost_at.append(time.monotonic())
            tally.lost_how.append(str(exc) or type(exc).__name__)
            tally.lost_on_old_connection += carried > 0
            writer.close()
            writer = None
            continue
        tally.answered[answer.status] += 1
        carried += 1
        if answers is not None:
            answers.append(answer)
        if answer.closes:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def get(port: int, path: str, timeout: float = 10.0) -> Answer:
    """One GET on a fresh connection."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        writer.write(http_request("GET", path, headers={"connection": "close"}))
        return await asyncio.wait_for(read_answer(reader), timeout)
    finally:
        writer.close()


# -- requests ------------------------------------------------------------------------------------------


def digit_png(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((28, 28)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def denoise_request(model: str, png: bytes, keep_alive: bool = True) -> Callable[[int], bytes]:
    headers = {"content-type": "image/png"} | ({} if keep_alive else {"connection": "close"})
    request = http_request("POST", f"/v1/denoise?model={model}", png, headers)
    return lambda number: request


def made_up_name_request(model: str, png: bytes, new_names: bool = True) -> Callable[[int], bytes]:
    """Each request names a new made-up model in its query (or, for comparison, always the same one), and
    the real one in its (multipart) body."""
    boundary = "chaosboundary"
    body = (
        (
            f'--{boundary}\r\ncontent-disposition: form-data; name="model"\r\n\r\n{model}\r\n'
            f'--{boundary}\r\ncontent-disposition: form-data; name="image"; filename="d.png"\r\n'
            "content-type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    salt = random.Random(0).getrandbits(32)
    return lambda number: http_request(
        "POST", f"/v1/denoise?model=made-up-{salt}-{number if new_names else 0}", body, headers
    )


async def load_for(port: int, make_request: Callable[[int], bytes], clients: int, seconds: float) -> Tally:
    tally = Tally()
    stop = asyncio.Event()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(client_loop(port, make_request, tally, stop, deadline) for _ in range(clients)))
    return tally
