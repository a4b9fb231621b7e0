"""The Open Inference Protocol's tensors and the V2 view of graphs as plain functions (no HTTP):
service/tensors.py and the checks of service/graphs.py."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from service import graphs, tensors
from service.errors import BadRequest, PayloadTooLarge

LIMIT = 1_000_000


def binary_request(head: dict, *chunks: bytes) -> tuple[bytes, str]:
    text = json.dumps(head).encode()
    return text + b"".join(chunks), str(len(text))


def bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def test_json_and_binary_inputs_give_the_same_tensors():
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    spec = {"name": "x", "shape": [2, 3], "datatype": "FP32"}
    nested = tensors.parse_request(
        json.dumps({"inputs": [{**spec, "data": x.tolist()}]}).encode(), None, max_bytes=LIMIT
    )
    flat = tensors.parse_request(
        json.dumps({"inputs": [{**spec, "data": x.reshape(-1).tolist()}]}).encode(),
        None,
        max_bytes=LIMIT,
    )
    body, header = binary_request(
        {"inputs": [{**spec, "parameters": {"binary_data_size": 24}}]}, x.tobytes()
    )
    binary = tensors.parse_request(body, header, max_bytes=LIMIT)
    for request in (nested, flat, binary):
        (t,) = request.inputs
        assert t.shape == (2, 3) and t.data.dtype == np.float32
        np.testing.assert_array_equal(t.data, x)


def bytes_request(shape: list[int], chunk: bytes) -> tensors.InferRequest:
    params = {"binary_data_size": len(chunk)}
    body, header = binary_request(
        {"inputs": [{"name": "s", "shape": shape, "datatype": "BYTES", "parameters": params}]},
        chunk,
    )
    return tensors.parse_request(body, header, max_bytes=LIMIT)


def test_bytes_elements_and_their_length_prefixes():
    (t,) = bytes_request([2], bytes_tensor(b"abc", b"")).inputs
    assert t.data.tolist() == [b"abc", b""]
    with pytest.raises(BadRequest, match="running past"):
        bytes_request([1], struct.pack("<I", 1000) + b"ab")
    with pytest.raises(BadRequest, match="2 bytes left after"):
        bytes_request([2], bytes_tensor(b"abc", b"") + b"xx")
    with pytest.raises(BadRequest, match="no 4-byte length"):
        bytes_request([3], bytes_tensor(b"abc", b""))


@pytest.mark.parametrize(
    "head, extra, error, words",
    [
        ({"inputs": [{"name": "x", "shape": [10**9, 10**9], "datatype": "FP32"}]}, b"",
         PayloadTooLarge, "over the limit"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}, b"",
         BadRequest, "1 values"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "INT8", "data": [1, 300]}]}, b"",
         BadRequest, "outside"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "data": [1, 2.5]}]}, b"",
         BadRequest, "whole numbers"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [[1], [2, 3]]}]}, b"",
         BadRequest, "unequal"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP99", "data": [1, 2]}]}, b"",
         BadRequest, "datatype"),
        ({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}, b"",
         BadRequest, "shape"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                      "parameters": {"binary_data_size": 8}}]}, b"\0" * 4,
         BadRequest, "run past"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                      "parameters": {"binary_data_size": 4}}]}, b"\0" * 8,
         BadRequest, "add up to 4"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "id": 7}, b"",
         BadRequest, "id"),
        ({"inputs": []}, b"", BadRequest, "inputs"),
    ],
)  # fmt: skip
def test_bad_requests_raise_client_errors_naming_the_field(head, extra, error, words):
    body, header = binary_request(head, extra)
    with pytest.raises(error, match=words):
        tensors.parse_request(body, header, max_bytes=LIMIT)


def test_malformed_json_is_described_without_quoting_it():
    with pytest.raises(BadRequest) as caught:
        tensors.parse_request(b'{"inputs": SECRET', None, max_bytes=LIMIT)
    assert "SECRET" not in str(caught.value) and "line 1" in str(caught.value)
    with pytest.raises(BadRequest, match="too deep"):
        tensors.parse_request(b"[" * 100_000, None, max_bytes=LIMIT)
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        tensors.parse_request(b"{}", "99", max_bytes=LIMIT)


def test_answers_json_binary_and_classification():
    logits = np.array([[1.5, 3.25, 0.5], [9.0, -1.0, 2.0]], dtype=np.float32)
    top = tensors.classify(logits, 2, ["a", "b", "c"], "logits")
    assert top.tolist() == [[b"3.25:1:b", b"1.5:0:a"], [b"9.0:0:a", b"2.0:2:c"]]
    t = tensors.Tensor("logits", "FP32", logits.shape, logits)
    c = tensors.Tensor("logits", "BYTES", top.shape, top)
    body, headers = tensors.encode_answer(
        "m", 3, "req-1", [(tensors.Requested("logits", False), t)]
    )
    assert headers == {"content-type": "application/json"}
    answer = json.loads(body)
    assert (
        answer["model_name"] == "m" and answer["model_version"] == "3" and answer["id"] == "req-1"
    )
    assert answer["outputs"][0]["data"] == logits.reshape(-1).tolist()
    body, headers = tensors.encode_answer(
        "m", 3, None, [(tensors.Requested("logits", True), t), (tensors.Requested("top", True), c)]
    )
    n = int(headers["inference-header-content-length"])
    head = json.loads(body[:n])
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert sizes[0] == 24 and n + sum(sizes) == len(body) and "id" not in head
    np.testing.assert_array_equal(np.frombuffer(body[n : n + 24], "<f4").reshape(2, 3), logits)
    nan = tensors.Tensor("x", "FP32", (2,), np.array([np.nan, 1.0], np.float32))
    body, _ = tensors.encode_answer("m", 1, None, [(tensors.Requested("x", False), nan)])
    assert json.loads(body)["outputs"][0]["data"] == [None, 1.0]  # JSON has no NaN


def test_graph_checks_names_datatypes_shapes_and_the_batch():
    inputs = [
        graphs.Spec("tokens", "INT64", ("batch",)),
        graphs.Spec("state", "FP32", ("batch", 2, 4)),
    ]

    def tensor(name, datatype, shape):
        return tensors.Tensor(name, datatype, shape, np.zeros(shape, tensors.DTYPES[datatype]))

    good = [tensor("tokens", "INT64", (3,)), tensor("state", "FP32", (3, 2, 4))]
    assert set(graphs.check(good, inputs, 64, images=False)) == {"tokens", "state"}
    cases = [
        ([good[0]], "missing 'state'"),
        ([*good, tensor("x", "FP32", (1,))], "no input named 'x'"),
        ([tensor("tokens", "INT32", (3,)), good[1]], "datatype INT32"),
        ([good[0], tensor("state", "FP32", (3, 2, 5))], "shape"),
        ([tensor("tokens", "INT64", (2,)), good[1]], "axis 'batch'"),
        ([tensor("tokens", "INT64", (65,)), tensor("state", "FP32", (65, 2, 4))], "batch of 65"),
    ]
    for given, words in cases:
        with pytest.raises(BadRequest, match=words):
            graphs.check(given, inputs, 64, images=False)
    images = tensors.Tensor("image", "BYTES", (2,), np.array([b"a", b"b"], dtype=object))
    pixels = [graphs.Spec("pixels", "FP32", ("batch", 1, 8, 8))]
    assert list(graphs.check([images], pixels, 64, images=True)) == [graphs.IMAGE_INPUT]
    with pytest.raises(BadRequest, match="missing"):
        graphs.check([images], pixels, 64, images=False)


def test_index_rows_per_graph_with_states_and_reasons():
    listing = [
        {"name": "vae", "version": 1, "status": "ready", "task": "vae",
         "inputs": {"encoder": [], "decoder": []}},
        {"name": "lenet5", "version": 2, "status": "failed", "reason": "checksum mismatch",
         "task": "classify", "inputs": {"model": []}},
        {"name": "garbled", "version": 1, "status": "failed", "reason": "not JSON"},
        {"name": "gan", "version": None, "status": "training"},
    ]  # fmt: skip
    rows = graphs.index(listing, ready_only=False)
    assert [(r["name"], r["state"]) for r in rows] == [
        ("vae.encoder", "READY"),
        ("vae.decoder", "READY"),
        ("lenet5", "UNAVAILABLE"),
        ("garbled", "UNAVAILABLE"),
    ]
    assert rows[2]["reason"] == "checksum mismatch" and rows[0]["version"] == "1"
    assert [r["name"] for r in graphs.index(listing, ready_only=True)] == [
        "vae.encoder",
        "vae.decoder",
    ]
