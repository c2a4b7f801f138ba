"""Regenerate the Python modules of the vendored KServe v2 proto (grpc_predict_v2.proto, Apache-2.0):

    python -m app.oip.proto.generate

grpcio-tools (the dev extra) bundles protoc. The generated modules are committed, so serving needs only
grpcio and protobuf; ruff and mypy skip them (pyproject). protoc writes `import grpc_predict_v2_pb2` in the
service module, which only works with this folder on sys.path: it is rewritten as a relative import.
The messages are built in a descriptor pool of their own (see PRIVATE_POOL).
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).parent
PROTO = "grpc_predict_v2.proto"
# Triton's client registers the same `inference.*` messages (from its own proto) in protobuf's default pool,
# and a process that imports both (a test, a benchmark) would fail with "duplicate symbol": the server's
# messages go into a pool of their own. The wire format, and so the protocol, is the same.
DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = "DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile("


def main() -> int:
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{HERE}",
            f"--python_out={HERE}",
            f"--pyi_out={HERE}",
            f"--grpc_python_out={HERE}",
            str(HERE / PROTO),
        ]
    )
    if status != 0:
        return int(status)
    service = HERE / "grpc_predict_v2_pb2_grpc.py"
    text = service.read_text()
    service.write_text(text.replace("import grpc_predict_v2_pb2 as", "from . import grpc_predict_v2_pb2 as"))
    messages = HERE / "grpc_predict_v2_pb2.py"
    text = messages.read_text()
    messages.write_text(text.replace(DEFAULT_POOL, PRIVATE_POOL, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
