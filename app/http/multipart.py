"""A fast path for plain multipart/form-data bodies, such as `curl -F image=@digit.png` sends.

Starlette's multipart parser (python-multipart) is general and streaming, and for a one-image
request it cost more than decoding the image. Almost every client sends the same simple shape: a
boundary without quoting tricks, and parts whose only headers are a Content-Disposition with a plain
`name` (and `filename` for a file) and maybe a Content-Type. Such a body is split here with a few
byte searches.

Anything else (quoted-printable names, charsets, odd headers, a missing final boundary, too many
parts, a field that is not UTF-8) returns None, and the caller hands the body to Starlette's parser:
the fast path never decides what an unusual body means, so every error and edge case keeps
Starlette's behaviour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# `multipart/form-data; boundary=...` and nothing else (a charset, say, goes to the full parser).
CONTENT_TYPE = re.compile(r"^multipart/form-data;\s*boundary=([A-Za-z0-9'()+_,./:=?-]{1,70})$", re.IGNORECASE)
DISPOSITION = re.compile(rb'^form-data; name="([A-Za-z0-9_.\[\]-]{1,64})"(?:; filename="([^"\\\r\n%]{0,255})")?$')
MAX_FIELD_BYTES = 1024 * 1024  # Starlette's default max_part_size for non-file parts


@dataclass
class Part:
    name: str
    value: bytes | str  # the content of a file part (one with a filename), or a field's text

    @property
    def is_file(self) -> bool:
        return isinstance(self.value, bytes)


def split_simple_multipart(content_type: str, body: bytes, max_files: int, max_fields: int) -> list[Part] | None:
    """The parts of a plain multipart body, in order; None when the body is not that plain."""
    match = CONTENT_TYPE.match(content_type.strip())
    if match is None:
        return None
    delimiter = b"--" + match.group(1).encode("ascii")
    if not body.startswith(delimiter + b"\r\n"):
        return None
    # body = --B\r\n part \r\n--B\r\n part \r\n--B--[\r\n]
    chunks = body[len(delimiter) + 2 :].split(b"\r\n" + delimiter)
    if chunks[-1] not in (b"--", b"--\r\n") or len(chunks) < 2:
        return None
    parts: list[Part] = []
    files = fields = 0
    for index, chunk in enumerate(chunks[:-1]):
        if index > 0:
            if not chunk.startswith(b"\r\n"):  # a boundary must end its line
                return None
            chunk = chunk[2:]
        part = _part(chunk)
        if part is None:
            return None
        files += part.is_file
        fields += not part.is_file
        if files > max_files or fields > max_fields:
            return None  # the full parser reports the limit in its own words
        parts.append(part)
    return parts


def _part(chunk: bytes) -> Part | None:
    head, separator, content = chunk.partition(b"\r\n\r\n")
    if not separator:
        return None
    disposition = None
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        header = name.strip().lower()
        if not colon:
            return None
        if header == b"content-disposition" and disposition is None:
            disposition = DISPOSITION.match(value.strip())
            if disposition is None:
                return None
        elif header != b"content-type":
            return None
    if disposition is None:
        return None
    field_name = disposition.group(1).decode("ascii")
    if disposition.group(2) is not None:
        return Part(field_name, content)
    if len(content) > MAX_FIELD_BYTES:
        return None
    try:
        return Part(field_name, content.decode("utf-8"))
    except UnicodeDecodeError:
        return None
