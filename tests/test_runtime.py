"""service.runtime: configuration from the environment, provider lists, sessions on this machine
(CPU; CUDA asked for but absent must refuse loudly), graph/card checks and warm-up."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from service import runtime as rt
from service.card import GraphIO, TensorSpec

CPU_ONLY = ["CPUExecutionProvider"]


def tiny_model(batch: int | str = "batch") -> bytes:
    """logits = relu(pixels @ W): pixels (batch, 4) float32 -> logits (batch, 3) float32."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.linspace(-1, 1, 12).tolist())
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["pixels", "w"], ["mm"]),
            helper.make_node("Relu", ["mm"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])],
        initializer=[w],
    )
    # make_model writes the newest IR version (14 with onnx 1.23), which ORT 1.31 refuses.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    return model.SerializeToString()


TINY_IO = GraphIO(
    inputs=[TensorSpec(name="pixels", dtype="float32", shape=["batch", 4])],
    outputs=[TensorSpec(name="logits", dtype="float32", shape=["batch", 3])],
)


# ------------------------------------------------------------------------------- configuration


def test_from_env_defaults():
    cfg = rt.RuntimeConfig.from_env({"XDG_CACHE_HOME": "/cache"})
    assert cfg == rt.RuntimeConfig(
        device="auto",
        intra_op_threads=1,
        cuda_device=0,
        gpu_mem_limit=None,
        cudnn_conv_algo_search="HEURISTIC",
        tensorrt=False,
        trt_cache="/cache/dlzoo/tensorrt",
    )


def test_from_env_reads_every_variable():
    cfg = rt.RuntimeConfig.from_env(
        {
            "DLZOO_DEVICE": "CUDA",
            "DLZOO_INTRA_OP_THREADS": "2",
            "DLZOO_CUDA_DEVICE": "1",
            "DLZOO_GPU_MEM_LIMIT": "2000000000",
            "DLZOO_CUDNN_CONV_ALGO_SEARCH": "exhaustive",
            "DLZOO_TENSORRT": "1",
            "DLZOO_TRT_CACHE": "/engines",
        }
    )
    assert cfg == rt.RuntimeConfig("cuda", 2, 1, 2_000_000_000, "EXHAUSTIVE", True, "/engines")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DLZOO_DEVICE": "gpu"}, "DLZOO_DEVICE must be one of auto, cpu, cuda"),
        ({"DLZOO_INTRA_OP_THREADS": "two"}, "DLZOO_INTRA_OP_THREADS"),
        ({"DLZOO_INTRA_OP_THREADS": "-1"}, "DLZOO_INTRA_OP_THREADS"),
        ({"DLZOO_GPU_MEM_LIMIT": "0"}, "DLZOO_GPU_MEM_LIMIT"),
        ({"DLZOO_GPU_MEM_LIMIT": "2GB"}, "DLZOO_GPU_MEM_LIMIT"),
        ({"DLZOO_CUDA_DEVICE": "x"}, "DLZOO_CUDA_DEVICE"),
        ({"DLZOO_TENSORRT": "maybe"}, "DLZOO_TENSORRT must be 0 or 1"),
        ({"DLZOO_CUDNN_CONV_ALGO_SEARCH": "fast"}, "EXHAUSTIVE, HEURISTIC, DEFAULT"),
    ],
)
def test_from_env_rejects_bad_values_naming_them(env, named):
    with pytest.raises(ValueError, match=named):
        rt.RuntimeConfig.from_env(env)


def test_config_is_validated_and_frozen():
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        rt.RuntimeConfig(device="tpu")  # type: ignore[arg-type]
    cfg = rt.RuntimeConfig()
    with pytest.raises(AttributeError):
        cfg.device = "cpu"  # type: ignore[misc]


# ----------------------------------------------------------------------------------- providers


CUDA_DEFAULT = (
    "CUDAExecutionProvider",
    {
        "device_id": "0",
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "HEURISTIC",
    },
)


def test_providers_cpu():
    assert rt.build_providers(rt.RuntimeConfig(device="cpu")) == ["CPUExecutionProvider"]
    # GPU options do not leak into a CPU list
    assert (
        rt.build_providers(rt.RuntimeConfig(device="cpu", tensorrt=True, gpu_mem_limit=10))
        == CPU_ONLY
    )


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_providers_cuda_and_auto(device):
    assert rt.build_providers(rt.RuntimeConfig(device=device)) == [
        CUDA_DEFAULT,
        "CPUExecutionProvider",
    ]


def test_providers_cuda_with_memory_limit_and_device():
    cfg = rt.RuntimeConfig(
        device="cuda", gpu_mem_limit=1 << 30, cuda_device=1, cudnn_conv_algo_search="EXHAUSTIVE"
    )
    assert rt.build_providers(cfg) == [
        (
            "CUDAExecutionProvider",
            {
                "device_id": "1",
                "arena_extend_strategy": "kSameAsRequested",
                "cudnn_conv_algo_search": "EXHAUSTIVE",
                "gpu_mem_limit": str(1 << 30),
            },
        ),
        "CPUExecutionProvider",
    ]


def test_providers_tensorrt_first():
    cfg = rt.RuntimeConfig(device="auto", tensorrt=True, trt_cache="/engines")
    assert rt.build_providers(cfg) == [
        (
            "TensorrtExecutionProvider",
            {
                "device_id": "0",
                "trt_fp16_enable": "True",
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": "/engines",
            },
        ),
        CUDA_DEFAULT,
        "CPUExecutionProvider",
    ]


def test_session_options():
    so = rt.session_options(rt.RuntimeConfig(intra_op_threads=3))
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


# ------------------------------------------------------------------------------------ sessions


def test_cpu_session(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny_model())
    for model in (path, str(path), path.read_bytes()):
        session, provider = rt.open_session(model, rt.RuntimeConfig(device="cpu"))
        assert provider == "CPUExecutionProvider" == session.get_providers()[0]
    x = np.array([[1.0, 0.5, -0.5, 2.0]], dtype=np.float32)
    (y,) = session.run(None, {"pixels": x})
    assert np.allclose(y, np.maximum(x @ np.linspace(-1, 1, 12).reshape(4, 3), 0), atol=1e-6)


def _cuda_usable() -> bool:
    return rt._gpu_problem("cuda") is None


def test_gpu_expected_decides_where_classifiers_run(monkeypatch):
    """cpu never expects a GPU, cuda always does (and fails start-up without one), auto when the
    CUDA provider's libraries load."""
    assert rt.gpu_expected(rt.RuntimeConfig(device="cpu")) is False
    assert rt.gpu_expected(rt.RuntimeConfig(device="cuda")) is True
    monkeypatch.setattr(rt, "_gpu_problem", lambda kind: "libcublasLt.so.13 is missing")
    assert rt.gpu_expected(rt.RuntimeConfig(device="auto")) is False
    assert rt.gpu_expected(rt.RuntimeConfig(device="cuda")) is True
    monkeypatch.setattr(rt, "_gpu_problem", lambda kind: None)
    assert rt.gpu_expected(rt.RuntimeConfig(device="auto")) is True
    assert rt.gpu_expected(rt.RuntimeConfig(device="cpu")) is False


@pytest.mark.skipif(_cuda_usable(), reason="a CUDA GPU is usable on this machine")
def test_auto_without_gpu_runs_on_cpu_with_one_quiet_warning(caplog, capfd, monkeypatch):
    monkeypatch.setattr(rt, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        for _ in range(3):
            _, provider = rt.open_session(tiny_model(), rt.RuntimeConfig(device="auto"))
            assert provider == "CPUExecutionProvider"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "running on CPU" in warnings[0].getMessage()
    # ORT itself printed nothing: auto never asked it for a CUDA provider that cannot load
    captured = capfd.readouterr()
    assert "onnxruntime" not in captured.err and "Failed to load" not in captured.out


@pytest.mark.skipif(_cuda_usable(), reason="a CUDA GPU is usable on this machine")
def test_cuda_without_gpu_refuses_with_a_clear_message():
    with pytest.raises(RuntimeError) as e:
        rt.open_session(tiny_model(), rt.RuntimeConfig(device="cuda"))
    message = str(e.value)
    assert "DLZOO_DEVICE=cuda" in message and "CPUExecutionProvider" in message
    assert "CUDA 13" in message and "cuDNN 9" in message
    assert "preload_dlls" in message and "onnxruntime-gpu[cuda,cudnn]" in message


def test_bad_model_bytes_raise_on_cpu():
    with pytest.raises(Exception, match="INVALID_PROTOBUF"):
        rt.open_session(b"not a model", rt.RuntimeConfig(device="cpu"))


# ---------------------------------------------------------------------------- checks, warm-up


def test_check_io_accepts_a_matching_card():
    session, _ = rt.open_session(tiny_model(), rt.RuntimeConfig(device="cpu"))
    assert rt.check_io(session, TINY_IO) == []


def test_check_io_flags_name_dtype_and_fixed_vs_symbolic():
    session, _ = rt.open_session(tiny_model(), rt.RuntimeConfig(device="cpu"))
    wrong = GraphIO(
        inputs=[TensorSpec(name="image", dtype="float32", shape=["batch", 4])],
        outputs=[TensorSpec(name="logits", dtype="int64", shape=[2, 3])],
    )
    problems = rt.check_io(session, wrong)
    text = "\n".join(problems)
    assert "input 'image': in the card, not in the graph" in text
    assert "input 'pixels': in the graph, not in the card" in text
    assert "output 'logits': card dtype int64 (tensor(int64)), graph tensor(float)" in text
    assert "output 'logits' axis 0: card 2, graph symbolic ('batch')" in text
    assert len(problems) == 4


def test_check_io_flags_a_graph_that_fixed_a_symbolic_axis():
    session, _ = rt.open_session(tiny_model(batch=1), rt.RuntimeConfig(device="cpu"))
    problems = rt.check_io(session, TINY_IO)
    assert problems == [
        "input 'pixels' axis 0: card symbolic 'batch', graph fixed 1",
        "output 'logits' axis 0: card symbolic 'batch', graph fixed 1",
    ]
    wrong_rank = GraphIO(
        inputs=[TensorSpec(name="pixels", dtype="float32", shape=["batch", 1, 4])],
        outputs=TINY_IO.outputs,
    )
    assert any(
        "card shape ['batch', 1, 4], graph [1, 4]" in p for p in rt.check_io(session, wrong_rank)
    )


def test_warm_up_runs_on_zeros():
    session, _ = rt.open_session(tiny_model(), rt.RuntimeConfig(device="cpu"))
    (y,) = rt.warm_up(session, TINY_IO)
    assert y.shape == (1, 3) and (y == 0).all()
