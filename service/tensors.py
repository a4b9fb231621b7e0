"""Tensors of the Open Inference Protocol (KServe V2 / Triton HTTP): requests in, answers out.

A request body is one JSON object, optionally followed by binary tensor data (Triton's binary
extension): the header ``Inference-Header-Content-Length`` gives the JSON's length, never the
Content-Type. A binary input says ``parameters.binary_data_size``; the sizes must add up to exactly
the bytes after the JSON. Binary data is little-endian and row-major; a BYTES element is a 4-byte
little-endian length and that many bytes. Every shape is checked against ``max_bytes`` before
anything is allocated for it, and no error message repeats the body (client strings are cut).

Only numpy here: no HTTP and no model. Errors are :mod:`service.errors` client errors.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import BadRequest, PayloadTooLarge

# The protocol's datatypes; BYTES elements are Python bytes in an object array.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
# A card's dtypes (service/card.py DType) as protocol datatypes.
FROM_CARD = {
    "float32": "FP32",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "bool": "BOOL",
}
MAX_RANK = 16  # more dimensions than any graph here has
MAX_TENSORS = 64  # inputs, or requested outputs, in one request
SHOWN = 64  # at most this many characters of a client's string in an error message


def shown(value: Any) -> str:
    """A client's value for an error message: quoted, and cut to ``SHOWN`` characters."""
    text = repr(value) if isinstance(value, str) else type(value).__name__
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray  # of DTYPES[datatype], in ``shape``


@dataclass(frozen=True)
class Requested:
    """An output the client asked for: binary or JSON, the tensor or its top ``classification``."""

    name: str
    binary: bool
    classification: int = 0


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[Requested] | None  # None: every output, each ``binary_output``
    binary_output: bool


# ------------------------------------------------------------------------------------- requests


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON, binary data) by ``Inference-Header-Content-Length``; without it all is JSON."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not text.isdigit() or int(text) > len(body):
        raise BadRequest(
            "Inference-Header-Content-Length: must be a whole number of bytes from 0 to the "
            f"body's length ({len(body)})"
        )
    return body[: int(text)], body[int(text) :]


def parse_json(text: bytes, what: str = "request") -> Any:
    if not text.strip():
        raise BadRequest(f"{what}: the body is empty; expected a JSON object")
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise BadRequest(f"{what}: the JSON is not UTF-8") from None
    except json.JSONDecodeError as exc:  # position only: the message never quotes the body
        raise BadRequest(
            f"{what}: malformed JSON at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError):  # an integer of 5,000 digits, arrays nested too deep
        raise BadRequest(f"{what}: JSON this server does not read (too deep or too long)") from None


def parse_request(body: bytes, header_length: str | None, *, max_bytes: int) -> InferRequest:
    """An inference request; each tensor at most ``max_bytes`` in memory."""
    head, binary = split_body(body, header_length)
    request = parse_json(head)
    if not isinstance(request, dict):
        raise BadRequest("request: must be a JSON object with 'inputs'")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("id: must be a string")
    params = _object(request.get("parameters"), "parameters")
    binary_output = _flag(params, "binary_data_output", "parameters")
    raw = request.get("inputs")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_TENSORS:
        raise BadRequest(f"inputs: must be a list of 1 to {MAX_TENSORS} tensors")
    inputs, offset = [], 0
    for i, spec in enumerate(raw):
        tensor, offset = _input(spec, i, binary, offset, max_bytes)
        if any(t.name == tensor.name for t in inputs):
            raise BadRequest(f"inputs: {shown(tensor.name)} is given twice")
        inputs.append(tensor)
    if offset != len(binary):
        raise BadRequest(
            f"binary data: the inputs' binary_data_size add up to {offset} bytes, but "
            f"{len(binary)} bytes follow the JSON"
        )
    outputs = _outputs(request.get("outputs"), binary_output)
    return InferRequest(request_id, inputs, outputs, binary_output)


def _object(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: must be a JSON object")
    return value


def _flag(params: dict, key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}.{key}: must be true or false")
    return value


def _input(spec: Any, i: int, binary: bytes, offset: int, max_bytes: int) -> tuple[Tensor, int]:
    where = f"inputs[{i}]"
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise BadRequest(f"{where}: must be an object with name, shape, datatype and data")
    where = f"inputs[{i}] ({shown(spec['name'])})"
    datatype = spec.get("datatype")
    if datatype not in DTYPES:
        raise BadRequest(f"{where}.datatype: must be one of {', '.join(DTYPES)}")
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise BadRequest(f"{where}.shape: must be a list of at most {MAX_RANK} whole numbers >= 0")
    count = math.prod(shape)
    # before anything is allocated: a BYTES element takes at least its 4-byte length
    size = count * (4 if datatype == "BYTES" else DTYPES[datatype].itemsize)
    if size > max_bytes:
        raise PayloadTooLarge(
            f"{where}.shape: {shape} holds {count} elements ({size} bytes), over the limit of "
            f"{max_bytes} bytes"
        )
    params = _object(spec.get("parameters"), f"{where}.parameters")
    if "binary_data_size" in params:
        n = params["binary_data_size"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise BadRequest(f"{where}.parameters.binary_data_size: must be a whole number >= 0")
        if "data" in spec:
            raise BadRequest(f"{where}: has both data and binary_data_size; send one")
        if offset + n > len(binary):
            raise BadRequest(
                f"{where}.parameters.binary_data_size: {n} bytes from offset {offset} run past "
                f"the {len(binary)} bytes of binary data after the JSON"
            )
        data = _from_binary(binary[offset : offset + n], datatype, count, where)
        offset += n
    elif "data" in spec:
        data = _from_json(spec["data"], datatype, count, where)
    else:
        raise BadRequest(f"{where}: has no data (give data, or binary_data_size and binary data)")
    return Tensor(spec["name"], datatype, tuple(shape), data.reshape(shape)), offset


def _from_binary(chunk: bytes, datatype: str, count: int, where: str) -> np.ndarray:
    if datatype == "BYTES":
        return _bytes_elements(chunk, count, where)
    dtype = DTYPES[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise BadRequest(
            f"{where}: binary_data_size is {len(chunk)} bytes; its shape and datatype take "
            f"{count * dtype.itemsize}"
        )
    if datatype == "BOOL":  # one byte each: anything but 0 is true
        return np.frombuffer(chunk, np.uint8) != 0
    return np.frombuffer(chunk, dtype.newbyteorder("<")).astype(dtype, copy=False)


def _bytes_elements(chunk: bytes, count: int, where: str) -> np.ndarray:
    out, at = np.empty(count, dtype=object), 0
    for k in range(count):
        if at + 4 > len(chunk):
            raise BadRequest(f"{where}: BYTES element {k} has no 4-byte length (chunk ends)")
        (n,) = struct.unpack_from("<I", chunk, at)
        if at + 4 + n > len(chunk):
            raise BadRequest(
                f"{where}: BYTES element {k} says {n} bytes, running past the end of its "
                f"binary_data_size ({len(chunk)} bytes)"
            )
        out[k] = chunk[at + 4 : at + 4 + n]
        at += 4 + n
    if at != len(chunk):
        raise BadRequest(
            f"{where}: {len(chunk) - at} bytes left after the {count} BYTES elements of its shape"
        )
    return out


def _from_json(data: Any, datatype: str, count: int, where: str) -> np.ndarray:
    if datatype == "BYTES":
        flat = list(_flat(data, where))
        if not all(isinstance(v, str) for v in flat):
            raise BadRequest(f"{where}.data: BYTES data in JSON must be strings")
        values = np.empty(len(flat), dtype=object)
        values[:] = [v.encode() for v in flat]
    else:
        try:
            values = np.asarray(data)
        except (ValueError, TypeError):  # ragged nesting
            raise BadRequest(f"{where}.data: nested lists of unequal lengths") from None
        values = _numbers(values.reshape(-1), datatype, where)
    if values.size != count:
        raise BadRequest(f"{where}.data: {values.size} values; its shape holds {count}")
    return values


def _flat(value: Any, where: str, depth: int = 0):
    if not isinstance(value, list):
        yield value
        return
    if depth > MAX_RANK:
        raise BadRequest(f"{where}.data: nested deeper than {MAX_RANK} levels")
    for v in value:
        yield from _flat(v, where, depth + 1)


def _numbers(values: np.ndarray, datatype: str, where: str) -> np.ndarray:
    """JSON numbers as ``datatype``: only booleans for BOOL, only whole numbers in range for the
    integer types, any number for the float types."""
    target = DTYPES[datatype]
    kind = values.dtype.kind if values.size else target.kind
    allowed = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[target.kind]
    if kind not in allowed:
        what = {"b": "true or false", "i": "whole numbers", "u": "whole numbers"}
        raise BadRequest(f"{where}.data: {datatype} takes {what.get(target.kind, 'numbers')} only")
    if target.kind in "iu" and values.size:
        info = np.iinfo(target)
        if values.min() < info.min or values.max() > info.max:
            raise BadRequest(f"{where}.data: values outside {datatype}'s {info.min}..{info.max}")
    return values.astype(target)


def _outputs(raw: Any, binary_output: bool) -> list[Requested] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > MAX_TENSORS:
        raise BadRequest(f"outputs: must be a list of at most {MAX_TENSORS} outputs")
    out: list[Requested] = []
    for i, spec in enumerate(raw):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest(f"outputs[{i}]: must be an object with a name")
        params = _object(spec.get("parameters"), f"outputs[{i}].parameters")
        k = params.get("classification", 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise BadRequest(f"outputs[{i}].parameters.classification: must be a whole number")
        if any(r.name == spec["name"] for r in out):
            raise BadRequest(f"outputs: {shown(spec['name'])} is asked for twice")
        # an output's own binary_data wins over the request's binary_data_output
        binary = _flag(params, "binary_data", f"outputs[{i}]") if "binary_data" in params else None
        out.append(Requested(spec["name"], binary_output if binary is None else binary, k))
    return out


# -------------------------------------------------------------------------------------- answers


def classify(values: np.ndarray, k: int, labels: list[str] | None, name: str) -> np.ndarray:
    """Triton's classification extension: the top ``k`` of the last axis as BYTES
    ``"value:index[:label]"``, highest value first; shape (..., k)."""
    if values.ndim == 0 or values.dtype.kind not in "biuf":
        raise BadRequest(f"outputs ({shown(name)}): classification needs a numeric tensor")
    n = values.shape[-1]
    if not 1 <= k <= n:
        raise BadRequest(f"outputs ({shown(name)}).parameters.classification: must be 1 to {n}")
    rows = values.reshape(-1, n)
    top = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :k]
    out = np.empty(top.shape, dtype=object)
    for r, row in enumerate(top):
        for c, j in enumerate(row):
            label = f":{labels[j]}" if labels is not None and j < len(labels) else ""
            out[r, c] = f"{str(rows[r, j])}:{j}{label}".encode()  # shortest repr of its dtype
    return out.reshape(*values.shape[:-1], k)


def _binary(values: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in values.reshape(-1))
    if datatype == "BOOL":
        return values.astype(np.uint8).tobytes()
    return np.ascontiguousarray(values, DTYPES[datatype].newbyteorder("<")).tobytes()


def _json_data(values: np.ndarray, datatype: str) -> list:
    flat = values.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", errors="replace") for v in flat]
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():  # JSON has no NaN: null, as orjson
        return [x if math.isfinite(x) else None for x in flat.tolist()]
    return flat.tolist()


def encode_answer(
    model_name: str, version: int, request_id: str | None, outputs: list[tuple[Requested, Tensor]]
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an inference answer: JSON, or JSON and binary chunks in the
    outputs' order when any output is binary."""
    answer: dict[str, Any] = {"model_name": model_name, "model_version": str(version)}
    if request_id is not None:
        answer["id"] = request_id
    described, chunks = [], []
    for want, t in outputs:
        out: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if want.binary:
            chunks.append(_binary(t.data, t.datatype))
            out["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            out["data"] = _json_data(t.data, t.datatype)
        described.append(out)
    answer["outputs"] = described
    head = json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()
    if not chunks:
        return head, {"content-type": "application/json"}
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)),
    }
    return b"".join([head, *chunks]), headers
