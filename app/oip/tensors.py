"""Tensors of the Open Inference Protocol: named, typed, shaped arrays, read from and written to its two
transports.

- REST: JSON tensors (`data` flattened or nested, row-major) and the binary-data extension that Triton's
  HTTP client uses: the request body is a JSON header of `Inference-Header-Content-Length` bytes followed by
  the raw bytes of each input whose `parameters.binary_data_size` says how many are its own; answers carry an
  output as bytes the same way when the request asks for it (`binary_data` on the output, or
  `binary_data_output` for all).
- gRPC: `raw_input_contents` / `raw_output_contents` (what tritonclient and the KServe SDK send), or the typed
  `contents` fields.
Every check names the tensor it refuses (`param`): wrong datatype, a shape that does not hold the data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.errors import InvalidRequest

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
# The typed `contents` field of the gRPC message that holds each datatype (FP16 travels only as raw bytes).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class Tensor:
    name: str
    datatype: str
    data: np.ndarray  # shaped, of the datatype's dtype
    binary: bool = False  # an output to send as bytes (REST binary-data extension)

    @property
    def shape(self) -> list[int]:
        return [int(size) for size in self.data.shape]


@dataclass
class InferRequest:
    """One inference request, whichever transport it came by."""

    inputs: list[Tensor]
    requested: list[str] | None = None  # output names; None: every output
    binary_outputs: set[str] = field(default_factory=set)  # REST: outputs to send as bytes
    request_id: str = ""


def dtype_of(datatype: str, name: str) -> np.dtype[Any]:
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidRequest(
            f"tensor {name!r} has datatype {datatype!r}; this server reads {', '.join(DATATYPES)}", param=name
        )
    return dtype


def checked_shape(shape: object, name: str) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise InvalidRequest(f"tensor {name!r}: 'shape' must be a list of sizes (integers >= 0)", param=name)
    return tuple(int(s) for s in shape)


def from_bytes(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> Tensor:
    """A tensor of raw little-endian, row-major bytes, which must be exactly what the shape holds."""
    dtype = dtype_of(datatype, name)
    count = int(np.prod(shape)) if shape else 1
    if len(raw) != count * dtype.itemsize:
        raise InvalidRequest(
            f"tensor {name!r} of shape {list(shape)} and datatype {datatype} needs {count * dtype.itemsize} bytes; "
            f"got {len(raw)}",
            param=name,
        )
    return Tensor(name, datatype, np.frombuffer(raw, dtype=dtype).reshape(shape))


def from_values(name: str, datatype: str, shape: tuple[int, ...], values: Any) -> Tensor:
    """A tensor of JSON (or protobuf) values: flattened or nested, row-major; as many as the shape holds."""
    dtype = dtype_of(datatype, name)
    try:
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise InvalidRequest(f"tensor {name!r}: its data are not {datatype} values", param=name) from None
    count = int(np.prod(shape)) if shape else 1
    if array.size != count:
        raise InvalidRequest(
            f"tensor {name!r} has shape {list(shape)} ({count} values) but {array.size} values", param=name
        )
    if dtype.kind in "iu" and np.asarray(values).dtype.kind == "f":  # 1.5 is no integer, though numpy casts it
        raise InvalidRequest(f"tensor {name!r}: its data are not {datatype} values", param=name)
    return Tensor(name, datatype, array.reshape(shape))


# -- REST --------------------------------------------------------------------------------------------


def read_rest_request(body: bytes, header_length: str | None) -> InferRequest:
    """The JSON of a /v2 infer request, with the binary-data extension when `header_length` is given."""
    binary = b""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidRequest(f"{HEADER_LENGTH} must be a number of bytes", param=HEADER_LENGTH) from None
        if not 0 <= length <= len(body):
            raise InvalidRequest(f"{HEADER_LENGTH} is {length}; the body has {len(body)} bytes", param=HEADER_LENGTH)
        body, binary = body[:length], body[length:]
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the inference request is not valid JSON", param="body") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise InvalidRequest("the inference request needs 'inputs', a list of tensors", param="inputs")
    inputs: list[Tensor] = []
    offset = 0
    for item in document["inputs"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequest("each input needs a 'name'", param="inputs")
        name = item["name"]
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise InvalidRequest(f"tensor {name!r} needs a 'datatype'", param=name)
        shape = checked_shape(item.get("shape"), name)
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidRequest(f"tensor {name!r}: binary_data_size overruns the body", param=name)
            inputs.append(from_bytes(name, datatype, shape, binary[offset : offset + size]))
            offset += size
        elif "data" in item:
            inputs.append(from_values(name, datatype, shape, item["data"]))
        else:
            raise InvalidRequest(f"tensor {name!r} has neither 'data' nor binary_data_size", param=name)
    if offset != len(binary):
        raise InvalidRequest(f"{len(binary) - offset} bytes of binary data belong to no input", param="body")
    everything_binary = bool((document.get("parameters") or {}).get("binary_data_output"))
    requested: list[str] | None = None
    binary_outputs: set[str] = set()
    outputs = document.get("outputs")
    if isinstance(outputs, list) and outputs:
        requested = []
        for output in outputs:
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise InvalidRequest("each requested output needs a 'name'", param="outputs")
            requested.append(output["name"])
            if (output.get("parameters") or {}).get("binary_data", everything_binary):
                binary_outputs.add(output["name"])
    elif everything_binary:
        binary_outputs = {"*"}
    request_id = document.get("id")
    return InferRequest(inputs, requested, binary_outputs, request_id if isinstance(request_id, str) else "")


def write_rest_response(
    model: str, version: str, request_id: str, outputs: list[Tensor]
) -> tuple[bytes, dict[str, str]]:
    """The answer's body and headers: JSON, then the bytes of the outputs sent as binary data."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor in outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if tensor.binary:
            raw = np.ascontiguousarray(tensor.data).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = tensor.data.reshape(-1).tolist()
        described.append(entry)
    document: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": described}
    if request_id:
        document["id"] = request_id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not chunks:
        return header, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return b"".join([header, *chunks]), headers
