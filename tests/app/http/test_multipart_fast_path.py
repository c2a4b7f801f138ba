"""The plain-multipart fast path (app.http.multipart) reads plain bodies exactly as Starlette's parser does,
and hands everything unusual to that parser (returns None)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.datastructures import UploadFile
from starlette.requests import Request

from app.http.multipart import split_simple_multipart

PNG = b"\x89PNG\r\n\x1a\n fake image bytes with a \r\n line break and --dashes"


def encoded(files: list[tuple[str, bytes]], data: dict[str, str] | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) as httpx (and so the Python client) builds a multipart upload."""
    request = httpx.Request(
        "POST", "http://test/", files=[(name, (f"{name}.png", blob, "image/png")) for name, blob in files], data=data
    )
    return request.headers["content-type"], request.read()


def starlette_items(content_type: str, body: bytes) -> list[tuple[str, bytes | str, bool]]:
    async def parse() -> list[tuple[str, bytes | str, bool]]:
        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "headers": [(b"content-type", content_type.encode())]}
        form = await Request(scope, receive).form()
        items: list[tuple[str, bytes | str, bool]] = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                items.append((name, await value.read(), True))
            else:
                items.append((name, value, False))
        return items

    return asyncio.run(parse())


@pytest.mark.parametrize(
    ("files", "data"),
    [
        ([("image", PNG)], None),
        ([("image", PNG), ("image", b"second")], {"model": "mnist-ae", "response_format": "json"}),
        ([("image", b"")], {"preprocess": "none", "note": "caf\u00e9"}),
        ([("other", PNG)], None),
    ],
)
def test_plain_bodies_are_read_as_starlette_reads_them(files: list[tuple[str, bytes]], data: dict[str, str]) -> None:
    content_type, body = encoded(files, data)
    parts = split_simple_multipart(content_type, body, max_files=65, max_fields=64)
    assert parts is not None
    assert [(part.name, part.value, part.is_file) for part in parts] == starlette_items(content_type, body)


def test_the_curl_style_body_of_the_benchmark_is_plain() -> None:
    from bench.loadgen import BOUNDARY, multipart_body

    parts = split_simple_multipart(f"multipart/form-data; boundary={BOUNDARY}", multipart_body([PNG]), 65, 64)
    assert parts is not None and [(part.name, part.value) for part in parts] == [("image", PNG)]


def plain(boundary: str = "XyZ") -> tuple[str, bytes]:
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + PNG
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return f"multipart/form-data; boundary={boundary}", body


@pytest.mark.parametrize(
    "change",
    [
        lambda ct, body: (ct + "; charset=latin-1", body),  # a charset: the full parser decides
        lambda ct, body: ('multipart/form-data; boundary="XyZ"', body),  # quoted boundary
        lambda ct, body: (ct, body.replace(b"--XyZ--", b"--XyZ")),  # no closing boundary
        lambda ct, body: (ct, body[:-20]),  # truncated
        lambda ct, body: (ct, b"preamble\r\n" + body),
        lambda ct, body: (ct, body.replace(b'name="image"', b'name="im\\"age"')),  # an escaped quote
        lambda ct, body: (ct, body.replace(b"Content-Type: image/png", b"X-Other: 1")),  # another header
        lambda ct, body: (ct, body.replace(b"Content-Disposition: form-data; ", b"Content-Disposition: ")),
        lambda ct, body: (ct, body.replace(b'filename="a.png"', b'filename="a%22.png"')),  # percent-encoding
    ],
)
def test_anything_unusual_goes_to_the_full_parser(change: object) -> None:
    content_type, body = change(*plain())  # type: ignore[operator]
    assert split_simple_multipart(content_type, body, max_files=65, max_fields=64) is None


def test_too_many_parts_go_to_the_full_parser_which_names_the_limit() -> None:
    content_type, body = encoded([("image", PNG)] * 3)
    assert split_simple_multipart(content_type, body, max_files=3, max_fields=64) is not None
    assert split_simple_multipart(content_type, body, max_files=2, max_fields=64) is None


def test_a_field_that_is_not_utf8_goes_to_the_full_parser() -> None:
    content_type, body = plain()
    body = body.replace(b'; filename="a.png"', b"").replace(PNG, b"\xff\xfe")
    assert split_simple_multipart(content_type, body, max_files=65, max_fields=64) is None
