"""The Open Inference Protocol (KServe V2 / Triton HTTP) on a real server, with the real clients.

Models: the session's lenet5 and mlp (and a broken lenet5 v2 and a garbled card, for the index)
beside dry-run gan, vae, lstm and seq2seq trained here, so every kind of graph is reachable.

KServe's ``InferenceRESTClient`` is not used here: ``pip install kserve`` (0.21) brings ~30
packages (fastapi, kubernetes, grpcio-tools, pandas...) and downgrades protobuf (7 -> 6) and psutil
(7 -> 5.9), which BentoML's own stack imports. ``test_kserve_rest_client_requests`` sends what
its REST client sends and reads the answers as it reads them (kserve/inference_client.py and
kserve/protocol/infer_type.py, 0.21.0).
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

tritonclient = pytest.importorskip("tritonclient.http")
from load_tests.common import digit_pngs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAX_UPLOAD = 2_000_000
MARKER = "SECRET-BODY-MARKER"  # sent in bad requests; no answer may repeat it


@pytest.fixture(scope="module")
def v2_repo(model_repo, tmp_path_factory) -> Path:
    from training import pipeline

    root = tmp_path_factory.mktemp("v2-models")
    runs = tmp_path_factory.mktemp("v2-runs")
    for name in ("lenet5/1", "mlp", "garbled"):
        shutil.copytree(model_repo / name, root / name)
    for name in ("gan", "vae", "lstm", "seq2seq"):  # the GAN is judged by the repository's lenet5
        pipeline.train(name, profile="dry-run", models_root=root, runs_root=runs, progress=False)
    shutil.copytree(model_repo / "lenet5/2", root / "lenet5/2")  # checksum mismatch
    return root


@pytest.fixture(scope="module")
def v2_server(v2_repo):
    from conftest import Server

    env = {"DLZOO_FRONT_WORKERS": "2", "DLZOO_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)}
    with Server(v2_repo, env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def triton(v2_server):
    client = tritonclient.InferenceServerClient(v2_server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def http(v2_server):
    with httpx.Client(base_url=v2_server.url, timeout=60) as c:
        yield c


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def inputs_for(meta: dict, batch: int, rng) -> list:
    """Inputs of the metadata's shapes with ``batch`` rows: small values (token ids 0..3)."""
    out = []
    for spec in meta["inputs"]:
        shape = [batch if d == -1 else d for d in spec["shape"]]
        dtype = np.dtype(tritonclient.triton_to_np_dtype(spec["datatype"]))
        values = rng.integers(0, 4, shape) if dtype.kind in "iu" else rng.random(shape)
        tensor = tritonclient.InferInput(spec["name"], shape, spec["datatype"])
        out.append(tensor.set_data_from_numpy(np.asarray(values).astype(dtype)))
    return out


def test_health_metadata_and_configuration(triton, http):
    assert triton.is_server_live() and triton.is_server_ready()
    server = triton.get_server_metadata()
    assert {"binary_tensor_data", "classification", "statistics"} <= set(server["extensions"])
    assert triton.is_model_ready("lenet5") and triton.is_model_ready("vae.decoder", "1")
    assert not triton.is_model_ready("lenet5", "2")  # checksum mismatch: never ready
    meta = triton.get_model_metadata("vae.decoder")
    assert meta["platform"] == "onnx_onnxv1" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "z", "datatype": "FP32", "shape": [-1, 4]}]
    lenet = triton.get_model_metadata("lenet5", "1")
    assert lenet["inputs"][0]["shape"][0] == -1 and lenet["versions"] == ["1"]
    config = triton.get_model_config("lenet5")
    assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == [1, 32, 32]
    assert config["input"][0]["data_type"] == "TYPE_FP32" and "dynamic_batching" in config
    # KServe's client reads JSON bodies from health; a model's ready says its name
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get("/v2/models/lenet5/ready").json() == {"name": "lenet5", "ready": True}


def test_binary_json_and_a_batch_of_three_agree(triton):
    x = np.random.default_rng(1).random((3, 1, 32, 32), dtype=np.float32)
    answers = {}
    for binary in (True, False):
        pixels = tritonclient.InferInput("pixels", [3, 1, 32, 32], "FP32")
        pixels.set_data_from_numpy(x, binary_data=binary)
        out = tritonclient.InferRequestedOutput("logits", binary_data=binary)
        result = triton.infer("lenet5", [pixels], outputs=[out], request_id=f"batch-{binary}")
        body = result.get_response()
        assert body["id"] == f"batch-{binary}" and body["model_name"] == "lenet5"
        answers[binary] = result.as_numpy("logits")
    np.testing.assert_array_equal(answers[True], answers[False])
    for algorithm in ("gzip", "deflate"):  # tritonclient's request compression
        pixels = tritonclient.InferInput("pixels", [3, 1, 32, 32], "FP32").set_data_from_numpy(x)
        result = triton.infer("lenet5", [pixels], request_compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("logits"), answers[True])
    singles = []
    for row in x:
        pixels = tritonclient.InferInput("pixels", [1, 1, 32, 32], "FP32")
        result = triton.infer("lenet5", [pixels.set_data_from_numpy(row[None])], model_version="1")
        assert result.get_response()["model_version"] == "1"
        singles.append(result.as_numpy("logits"))
    np.testing.assert_allclose(np.concatenate(singles), answers[True], atol=1e-4, rtol=0)


def test_encoded_images_answer_as_classify_does(triton, http):
    """A BYTES input of PNG files: the same preprocessing, batcher and graph as /classify."""
    files = [data for data, _ in digit_pngs(count=4, seed=3)]
    images = tritonclient.InferInput("image", [len(files)], "BYTES")
    images.set_data_from_numpy(np.array(files, dtype=object))
    top3 = tritonclient.InferRequestedOutput("logits", class_count=3)
    result = triton.infer("lenet5", [images], outputs=[tritonclient.InferRequestedOutput("logits")])
    probabilities = softmax(result.as_numpy("logits").astype(np.float64))
    classes = triton.infer("lenet5", [images], outputs=[top3]).as_numpy("logits")
    assert classes.shape == (4, 3)
    for k, data in enumerate(files):
        answer = http.post(
            "/classify", files={"image": ("d.png", data)}, data={"model": "lenet5", "top_k": "10"}
        ).json()
        by_index = {p["index"]: p["probability"] for p in answer["predictions"]}
        np.testing.assert_allclose(
            probabilities[k], [by_index[i] for i in range(10)], atol=1e-5, rtol=0
        )
        value, index, label = classes[k][0].decode().split(":")
        best = answer["predictions"][0]
        assert int(index) == best["index"] == int(np.argmax(probabilities[k]))
        assert label == best["label"] and float(value) == pytest.approx(
            result.as_numpy("logits")[k].max(), abs=1e-5
        )


def test_every_ready_graph_answers_in_its_metadata_shapes(triton, http):
    rng = np.random.default_rng(2)
    ready = [row["name"] for row in triton.get_model_repository_index() if row["state"] == "READY"]
    expected = {"lenet5", "mlp", "gan", "vae.encoder", "vae.decoder", "lstm.step"}
    assert expected | {"seq2seq.encoder", "seq2seq.decoder_step"} == set(ready)
    for name in ready:
        meta = triton.get_model_metadata(name)
        result = triton.infer(name, inputs_for(meta, 2, rng))
        for spec in meta["outputs"]:
            got = result.as_numpy(spec["name"])
            assert list(got.shape) == [2 if d == -1 else d for d in spec["shape"]], (name, spec)
    # JSON all the way, as curl would send it
    z = {"name": "z", "shape": [1, 4], "datatype": "FP32", "data": [0.0, 0.1, 0.2, 0.3]}
    resp = http.post("/v2/models/vae.decoder/versions/1/infer", json={"inputs": [z]})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert len(resp.json()["outputs"][0]["data"]) == 28 * 28


def test_repository_index_states_and_reasons(triton, http):
    rows = {(r["name"], r["version"]): r for r in triton.get_model_repository_index()}
    assert rows[("lenet5", "1")]["state"] == "READY"
    broken = rows[("lenet5", "2")]
    assert broken["state"] == "UNAVAILABLE" and "checksum mismatch" in broken["reason"]
    assert rows[("garbled", "1")]["state"] == "UNAVAILABLE"
    ready = http.post("/v2/repository/index", json={"ready": True}).json()
    assert ready and all(r["state"] == "READY" for r in ready)


def test_statistics_follow_the_requests(triton, v2_server):
    def stats():
        (s,) = triton.get_inference_statistics("mlp", "1")["model_stats"]
        return s

    before = stats()
    x = np.zeros((2, 1, 16, 16), np.float32)
    for _ in range(3):  # connections may land on either front worker: both are counted
        with tritonclient.InferenceServerClient(v2_server.url.removeprefix("http://")) as c:
            c.infer("mlp", [tritonclient.InferInput("pixels", [2, 1, 16, 16], "FP32")
                            .set_data_from_numpy(x)])  # fmt: skip
    after = stats()
    assert after["inference_count"] - before["inference_count"] == 6
    assert after["execution_count"] - before["execution_count"] >= 3
    # perf_analyzer aborts unless compute_input, compute_infer and compute_output count alike
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert after["inference_stats"][key]["count"] - before["inference_stats"][key]["count"] == 6
    assert (
        after["inference_stats"]["compute_infer"]["ns"]
        > before["inference_stats"]["compute_infer"]["ns"]
    )
    assert after["last_inference"] > 0 and after["batch_stats"] == []
    listed = {s["name"] for s in triton.get_inference_statistics()["model_stats"]}
    assert {"mlp", "lenet5", "vae.decoder", "lstm.step"} <= listed


@pytest.mark.parametrize("model", ["mlp", "vae.decoder"])  # the batcher, and a graph run as it is
def test_triton_perf_analyzer_measures_the_v2_path(v2_server, model):
    """Triton's own load generator (what ``make bench`` runs) reads /v2, the metadata, the
    configuration and the statistics around every window, then sends binary requests: it aborts
    on anything it cannot read. Needs ``make bench``'s .venv-pytriton (load_tests/v2_bench.py)."""
    from load_tests import v2_bench

    tools = v2_bench.Tools.find()
    if tools.problem():
        pytest.skip(tools.problem())
    row = v2_bench.run_perf_analyzer(tools, v2_server.url, model, 2, 500)
    assert row["throughput"] > 0 and row["p99_ms"] > 0
    assert row["inferences"] > 0 and row["mean_batch"] >= 1


def test_v2_requests_appear_in_metrics(triton, http):
    z = tritonclient.InferInput("z", [1, 4], "FP32").set_data_from_numpy(np.zeros((1, 4), "f4"))
    triton.infer("vae.decoder", [z])
    text = http.get("/metrics").text
    assert re.search(r'endpoint="/v2/models/vae.decoder/infer".*http_response_code="200"', text)
    assert re.search(r'dlzoo_inference_seconds_count\{model="vae@1"', text)


def test_kserve_rest_client_requests(http):
    """What InferenceRESTClient(RESTConfig(protocol="v2")) sends and reads (module docstring)."""
    assert http.get("/v2/health/live").json().get("live") is True
    assert http.get("/v2/health/ready").json().get("ready") is True
    assert http.get("/v2/models/mlp/ready").is_success
    request_id = str(uuid.uuid4())
    x = np.random.default_rng(4).random((1, 1, 16, 16), dtype=np.float32)
    pixels = {"name": "pixels", "shape": [1, 1, 16, 16], "datatype": "FP32"}
    body = {
        "id": request_id,
        "model_name": "mlp",
        "inputs": [{**pixels, "data": x.ravel().tolist()}],
    }
    resp = http.post(
        "/v2/models/mlp/infer",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert resp.is_success and resp.headers["content-type"] == "application/json"
    answer = resp.json()  # InferResponse.from_bytes: model_name is required
    assert answer["model_name"] == "mlp" and answer["id"] == request_id
    # the binary form: raw data after the JSON, its length in a header, an octet-stream body
    head = json.dumps(
        {"id": request_id, "model_name": "mlp",
         "inputs": [{**pixels, "parameters": {"binary_data_size": x.nbytes}}]}
    ).encode()  # fmt: skip
    headers = {
        "inference-header-content-length": str(len(head)),
        "content-type": "application/octet-stream",
    }
    binary = http.post("/v2/models/mlp/infer", content=head + x.tobytes(), headers=headers).json()
    assert binary["outputs"][0]["data"] == answer["outputs"][0]["data"]
    missing = http.post("/v2/models/nope/infer", content=json.dumps(body))
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"


def bad_requests() -> list[tuple[str, str, dict, int]]:
    """(case, path, httpx request arguments, status)."""
    pixels = {"name": "pixels", "shape": [1, 1, 16, 16], "datatype": "FP32"}
    data = [0.0] * 256

    def infer(body, model="mlp", **extra):
        return f"/v2/models/{model}/infer", {"content": json.dumps(body), **extra}

    def binary(head, tail, **headers):
        text = json.dumps(head).encode()
        hdrs = {"inference-header-content-length": str(len(text)), **headers}
        return "/v2/models/mlp/infer", {"content": text + tail, "headers": hdrs}

    def sized(n):
        return {"inputs": [{**pixels, "parameters": {"binary_data_size": n}}]}

    bomb = gzip.compress(b" " * (MAX_UPLOAD + 200_000))
    return [
        ("wrong datatype", *infer({"inputs": [{**pixels, "datatype": "FP64", "data": data}]}), 400),
        ("wrong shape", *infer({"inputs": [{**pixels, "shape": [1, 1, 8, 32],
                                            "data": data}]}), 400),
        ("missing input", *infer({"inputs": [{"name": "tokens", "shape": [1], "datatype": "INT64",
                                              "data": [1]}]}, "lstm.step"), 400),
        ("no inputs", *infer({"inputs": [], "note": MARKER}), 400),
        ("unknown model", *infer({"inputs": [{**pixels, "data": data}]}, "resnet9"), 404),
        ("unknown version", "/v2/models/mlp/versions/7/infer", {"content": "{}"}, 404),
        ("malformed JSON", "/v2/models/mlp/infer", {"content": '{"inputs": [' + MARKER}, 400),
        ("not an object", *infer([MARKER]), 400),
        ("data length != shape", *infer({"inputs": [{**pixels, "data": data[:-1]}]}), 400),
        ("string data", *infer({"inputs": [{**pixels, "data": [MARKER] * 256}]}), 400),
        ("binary_data_size beyond the body", *binary(sized(1024), b"\0" * 512), 400),
        ("binary sizes do not add up", *binary(sized(1024), b"\0" * 1030), 400),
        ("header length past the body", "/v2/models/mlp/infer",
         {"content": "{}", "headers": {"inference-header-content-length": "99"}}, 400),
        ("huge declared shape", *infer({"inputs": [{**pixels, "shape": [10**6, 1, 16, 16],
                                                    "data": data}]}), 413),
        ("gzip bomb", "/v2/models/mlp/infer",
         {"content": bomb, "headers": {"content-encoding": "gzip"}}, 413),
        ("unsupported Content-Encoding", "/v2/models/mlp/infer",
         {"content": b"\0" * 10, "headers": {"content-encoding": "br"}}, 415),
        ("body over the limit", "/v2/models/mlp/infer", {"content": b" " * (MAX_UPLOAD + 70_000)},
         413),
        ("BYTES length prefix past its chunk",
         *binary({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                              "parameters": {"binary_data_size": 8}}]},
                 struct.pack("<I", 500) + b"\x89PNG"), 400),
        ("BYTES that is not an image",
         *binary({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                              "parameters": {"binary_data_size": 4 + len(MARKER)}}]},
                 struct.pack("<I", len(MARKER)) + MARKER.encode()), 415),
        ("batch over DLZOO_MAX_BATCH", *infer({"inputs": [{**pixels, "shape": [65, 1, 16, 16],
                                                           "data": data * 65}]}), 400),
        ("classification past the classes",
         *infer({"inputs": [{**pixels, "data": data}],
                 "outputs": [{"name": "logits", "parameters": {"classification": 11}}]}), 400),
        ("unknown output", *infer({"inputs": [{**pixels, "data": data}],
                                   "outputs": [{"name": "probabilities"}]}), 400),
        ("token id past the vocabulary",
         *infer({"inputs": [{"name": "tokens", "shape": [1], "datatype": "INT64", "data": [10**6]},
                            {"name": "state", "shape": [1, 2, 32], "datatype": "FP32",
                             "data": [0.0] * 64}]}, "lstm.step"), 400),
        ("nested too deep", "/v2/models/mlp/infer", {"content": "[" * 200_000}, 400),
        ("GET on infer", "/v2/models/mlp/infer", {"method": "GET"}, 405),
        ("index request not an object", "/v2/repository/index", {"content": "[true]"}, 400),
    ]  # fmt: skip


def test_bad_requests_are_4xx_json_errors_and_the_server_keeps_serving(http, triton):
    statuses = {}
    for case, path, kwargs, status in bad_requests():
        method = kwargs.pop("method", "POST")
        resp = http.request(method, path, **kwargs)
        statuses[case] = resp.status_code
        assert resp.status_code == status, (case, resp.status_code, resp.text[:300])
        assert resp.headers["content-type"] == "application/json", case
        body = resp.json()
        assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"], case
        assert MARKER not in resp.text, f"{case}: the answer repeats the request"
    print("\n".join(f"{status} {case}" for case, status in statuses.items()))
    x = np.zeros((1, 1, 16, 16), np.float32)
    pixels = tritonclient.InferInput("pixels", [1, 1, 16, 16], "FP32").set_data_from_numpy(x)
    assert triton.infer("mlp", [pixels]).as_numpy("logits").shape == (1, 10)
    assert http.get("/readyz").status_code == 200 and triton.is_server_ready()


def largest_classify_batch(url: str, clients: int, seconds: float = 30.0) -> int:
    """``clients`` threads send /classify requests one after another while two threads send V2
    requests of 32 rows (so that the batcher stays busy), each on a new connection, until a
    /classify answer reports a batch larger than ``clients`` (V2 rows shared its ONNX call) or
    ``seconds`` have passed: the largest ``batch_size`` seen. Until, not a fixed count: how often
    the two meet depends on how busy the machine is, not on whether they can."""
    data = digit_pngs(count=1, seed=6)[0][0]
    pixels = {"name": "pixels", "shape": [32, 1, 32, 32], "datatype": "FP32"}
    pixels["parameters"] = {"binary_data_size": 32 * 1024 * 4}
    head = json.dumps({"inputs": [pixels]}).encode()
    body = head + np.zeros(32 * 1024, np.float32).tobytes()
    done = threading.Event()

    def v2():
        while not done.is_set():
            headers = {"inference-header-content-length": str(len(head))}
            resp = httpx.post(f"{url}/v2/models/lenet5/infer", content=body, headers=headers)
            assert resp.status_code == 200, resp.text

    deadline, shared = time.monotonic() + seconds, threading.Event()

    def classify():
        with httpx.Client(base_url=url, timeout=60) as c:
            sizes = [0]
            while not shared.is_set() and time.monotonic() < deadline:
                resp = c.post("/classify", files={"image": ("d.png", data)}, data={"top_k": "1"})
                sizes.append(resp.json()["batch_size"])
                if sizes[-1] > clients:
                    shared.set()
            return max(sizes)

    with ThreadPoolExecutor(clients + 2) as pool:
        senders = [pool.submit(v2) for _ in range(2)]
        try:
            return max(pool.map(lambda _: classify(), range(clients)))
        finally:
            done.set()
            for sender in senders:
                sender.result()


def test_v2_rows_join_the_classify_batcher(v2_server):
    largest = largest_classify_batch(v2_server.url, clients=4)
    print(f"largest /classify batch beside V2 rows: {largest}")
    assert largest > 4


def test_readme_v2_snippet_runs_as_written(v2_server, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Open Inference Protocol (V2)", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    code = snippet.replace("localhost:3000", v2_server.url.removeprefix("http://"))
    monkeypatch.chdir(ROOT)  # its paths are the repository's, as the README's commands
    exec(compile(code, "README.md", "exec"), {})


def test_classifiers_in_the_inference_service_answer_the_same(v2_repo, triton):
    """On a GPU the classifiers live in the Inference service: V2 reaches them there through
    Inference.run_graph, and they answer as the front's own."""
    from conftest import Server

    x = np.random.default_rng(5).random((3, 1, 32, 32), dtype=np.float32)
    env = {"DLZOO_CLASSIFY_IN": "inference", "DLZOO_FRONT_WORKERS": "1"}
    with Server(v2_repo, env=env) as srv:
        with tritonclient.InferenceServerClient(srv.url.removeprefix("http://")) as other:
            answers = []
            for client in (triton, other):
                pixels = tritonclient.InferInput("pixels", [3, 1, 32, 32], "FP32")
                answers.append(client.infer("lenet5", [pixels.set_data_from_numpy(x)]))
            np.testing.assert_allclose(
                answers[0].as_numpy("logits"), answers[1].as_numpy("logits"), atol=1e-5
            )
        largest = largest_classify_batch(srv.url, clients=1)
        print(f"largest /classify batch beside V2 rows, both in Inference: {largest}")
        assert largest > 1  # one batcher, there
