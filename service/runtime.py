"""ONNX Runtime sessions: which device, with which options, checked against the card, warmed up.

Configuration: :class:`RuntimeConfig`, read with the service's other settings (the variables
and their defaults are listed once, in service/settings.py). ``auto`` runs on CUDA when it is
usable, else on CPU with one warning; ``cuda`` runs on CUDA or refuses to start; ``cpu`` runs on
the CPU only. One ORT thread per session by default: the zoo's models are small, and more workers
serve more requests than more threads.

Device id: BentoML 1.4 sets ``CUDA_VISIBLE_DEVICES`` to the GPUs it assigned to a service when the
service declares ``resources={"gpu": n}`` (``_bentoml_impl/server/allocator.py``; the same list for
every worker of that service, none when ``workers="cpu_count"`` or ``CUDA_VISIBLE_DEVICES`` is
already set). CUDA numbers visible devices from 0, so 0 is the first assigned GPU and the right
default; set ``DLZOO_CUDA_DEVICE`` only to pick another one of those.

cuDNN convolution search: EXHAUSTIVE (ORT's default) benchmarks every algorithm for each new input
shape; with continuous batching every batch size is a new shape, so the default here is HEURISTIC.

Provider option names were checked against the strings in the installed onnxruntime-gpu 1.31.1
provider libraries (``libonnxruntime_providers_cuda.so``: device_id, gpu_mem_limit,
arena_extend_strategy/kSameAsRequested, cudnn_conv_algo_search/EXHAUSTIVE/HEURISTIC;
``libonnxruntime_providers_tensorrt.so``: trt_fp16_enable, trt_engine_cache_enable,
trt_engine_cache_path) and ORT's ``OrtCUDAProviderOptions`` reference. ORT's Python API turns
every option value into a string, so the values here are strings already.

What happens without a usable GPU (checked on a CPU-only machine with onnxruntime-gpu 1.31.1):
``get_available_providers()`` still lists TensorRT and CUDA (it lists what the build contains).
Asking for CUDA then prints an ORT ERROR (libcublasLt.so.13 missing) and a WARNING to stderr and
silently gives a CPU session. So ``auto`` first checks, quietly, that the libraries the CUDA
provider library needs load (CUDA 13 runtime, cuBLAS, the driver's libcuda); only then does it ask
ORT for CUDA. ``session.get_providers()[0]`` is the truth about what a session got.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import io
import logging
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import onnxruntime as ort

from service import card

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
ConvAlgoSearch = Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"]
Provider = str | tuple[str, dict[str, str]]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
_LABELS = {"cuda": "CUDA", "tensorrt": "TensorRT"}

_GPU_HINT = (
    f"onnxruntime-gpu {ort.__version__} needs an NVIDIA GPU with its driver, CUDA 13 and cuDNN 9; "
    "`pip install onnxruntime-gpu[cuda,cudnn]` installs the CUDA libraries, which "
    "onnxruntime.preload_dlls() loads (see https://onnxruntime.ai/docs/install/#cuda-and-cudnn)"
)

# card dtype -> what ORT reports for a tensor of it, and the numpy dtype to feed it
_ORT_TYPES = {
    "float32": "tensor(float)",
    "float16": "tensor(float16)",
    "int64": "tensor(int64)",
    "int32": "tensor(int32)",
    "bool": "tensor(bool)",
}
_NUMPY_TYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
}


@dataclass(frozen=True)
class RuntimeConfig:
    """How sessions are created; see the module docstring for the variables and defaults."""

    device: Device = "auto"
    intra_op_threads: int = 1
    cuda_device: int = 0
    gpu_mem_limit: int | None = None
    cudnn_conv_algo_search: ConvAlgoSearch = "HEURISTIC"
    tensorrt: bool = False
    trt_cache: str = str(Path("~/.cache/dlzoo/tensorrt").expanduser())

    def __post_init__(self) -> None:
        if self.device not in get_args(Device):
            raise ValueError(
                f"device must be one of {', '.join(get_args(Device))}; got {self.device!r}"
            )
        if self.cudnn_conv_algo_search not in get_args(ConvAlgoSearch):
            raise ValueError(
                f"cudnn_conv_algo_search must be one of {', '.join(get_args(ConvAlgoSearch))}; "
                f"got {self.cudnn_conv_algo_search!r}"
            )
        if self.intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0; got {self.intra_op_threads}")
        if self.cuda_device < 0:
            raise ValueError(f"cuda_device must be >= 0; got {self.cuda_device}")
        if self.gpu_mem_limit is not None and self.gpu_mem_limit < 1:
            raise ValueError(
                f"gpu_mem_limit must be a positive number of bytes; got {self.gpu_mem_limit}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RuntimeConfig:
        """Read the DLZOO_* variables; a bad value raises ValueError naming the variable."""
        from service.settings import env_bool, env_int  # settings reads this class's variables

        device = env.get("DLZOO_DEVICE", "auto").strip().lower() or "auto"
        if device not in get_args(Device):
            raise ValueError(
                f"DLZOO_DEVICE must be one of {', '.join(get_args(Device))}; got {device!r}"
            )
        search = env.get("DLZOO_CUDNN_CONV_ALGO_SEARCH", "HEURISTIC").strip().upper() or "HEURISTIC"
        if search not in get_args(ConvAlgoSearch):
            raise ValueError(
                "DLZOO_CUDNN_CONV_ALGO_SEARCH must be one of "
                f"{', '.join(get_args(ConvAlgoSearch))}; got {search!r}"
            )
        cache_home = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
        return cls(
            device=device,  # type: ignore[arg-type]
            intra_op_threads=env_int(env, "DLZOO_INTRA_OP_THREADS", 1, minimum=0),
            cuda_device=env_int(env, "DLZOO_CUDA_DEVICE", 0, minimum=0),
            gpu_mem_limit=env_int(env, "DLZOO_GPU_MEM_LIMIT", None, minimum=1),
            cudnn_conv_algo_search=search,  # type: ignore[arg-type]
            tensorrt=env_bool(env, "DLZOO_TENSORRT", False),
            trt_cache=env.get("DLZOO_TRT_CACHE") or str(Path(cache_home) / "dlzoo" / "tensorrt"),
        )


# ------------------------------------------------------------------------------------- providers


def build_providers(cfg: RuntimeConfig) -> list[Provider]:
    """The providers to ask ORT for, best first. Pure: :func:`open_session` does the probing."""
    if cfg.device == "cpu":
        return [CPU]
    device_id = str(cfg.cuda_device)
    providers: list[Provider] = []
    if cfg.tensorrt:
        providers.append(
            (
                TENSORRT,
                {
                    "device_id": device_id,
                    "trt_fp16_enable": "True",
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": cfg.trt_cache,
                },
            )
        )
    cuda: dict[str, str] = {
        "device_id": device_id,
        # grow the arena by what is asked, not to the next power of two: several models share a GPU
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": cfg.cudnn_conv_algo_search,
    }
    if cfg.gpu_mem_limit is not None:
        cuda["gpu_mem_limit"] = str(cfg.gpu_mem_limit)
    providers.append((CUDA, cuda))
    providers.append(CPU)
    return providers


def session_options(cfg: RuntimeConfig) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = cfg.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


@functools.cache
def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* pip packages if present (``onnxruntime-gpu[cuda,cudnn]``).

    ``preload_dlls`` reports failures with print(); that text goes to the debug log instead.
    """
    if not hasattr(ort, "preload_dlls"):
        return
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            ort.preload_dlls()
    except Exception as exc:
        logger.debug("onnxruntime.preload_dlls() failed: %s", exc)
    if out.getvalue().strip():
        logger.debug("onnxruntime.preload_dlls(): %s", out.getvalue().strip())


def _provider_library_problem(kind: str) -> str | None:
    """Why ORT's ``kind`` ("cuda", "tensorrt") provider library would not load, or None.

    Loads the shared libraries the provider library needs (its ELF ``DT_NEEDED`` list: CUDA
    runtime, cuBLAS, the driver's libcuda, TensorRT...), which is what fails on a machine without
    them, quietly. The provider library itself is never loaded here: its initializer calls
    ``Provider_GetHost``, which only exists once ORT has loaded it (checked: a lazy dlopen with
    every CUDA dependency present fails on that symbol). None also when the library cannot be
    located or is not a 64-bit little-endian ELF file (Windows, say): ORT is then left to try.
    """
    capi = Path(ort.__file__).parent / "capi"
    candidates = sorted(glob.glob(str(capi / f"*onnxruntime_providers_{kind}.*")))
    if not candidates:
        return None
    try:
        needed = _elf_needed(candidates[0])
    except (OSError, ValueError, struct.error) as exc:
        logger.debug("cannot read %s: %s", candidates[0], exc)
        return None
    for name in needed or []:
        try:
            ctypes.CDLL(name)
        except OSError as exc:
            return f"onnxruntime's {_LABELS[kind]} provider cannot load {name} ({exc})"
    return None


def _elf_needed(path: str) -> list[str] | None:
    """The ``DT_NEEDED`` entries of a 64-bit little-endian ELF shared library (None otherwise)."""
    with open(path, "rb") as f:
        ident = f.read(64)
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:  # ELFCLASS64, little endian
            return None
        (phoff,) = struct.unpack_from("<Q", ident, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", ident, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        loads, dynamic = [], None
        for i in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
                "<IIQQQQ", table, i * phentsize
            )
            if p_type == 1:  # PT_LOAD
                loads.append((p_vaddr, p_offset, p_filesz))
            elif p_type == 2:  # PT_DYNAMIC
                dynamic = (p_offset, p_filesz)
        if dynamic is None:
            return []
        f.seek(dynamic[0])
        raw = f.read(dynamic[1])
        entries = [struct.unpack_from("<qQ", raw, i) for i in range(0, len(raw) - 15, 16)]
        strtab = next((v for tag, v in entries if tag == 5), None)  # DT_STRTAB (a virtual address)
        if strtab is None:
            return []
        base = next(
            (off + strtab - va for va, off, size in loads if va <= strtab < va + size), None
        )
        if base is None:
            return None
        names = []
        for tag, value in entries:
            if tag == 0:  # DT_NULL
                break
            if tag == 1:  # DT_NEEDED: an offset into the string table
                f.seek(base + value)
                names.append(f.read(256).split(b"\0", 1)[0].decode())
        return names


@functools.cache
def _gpu_problem(kind: str) -> str | None:
    if (TENSORRT if kind == "tensorrt" else CUDA) not in ort.get_available_providers():
        return f"this onnxruntime build has no {_LABELS[kind]} provider (install onnxruntime-gpu)"
    _preload_cuda_libraries()
    return _provider_library_problem(kind)


def gpu_expected(cfg: RuntimeConfig) -> bool:
    """Whether sessions made with ``cfg`` will ask for a GPU: for deciding where work runs before
    any session exists. ``auto`` expects one when the CUDA provider's libraries load; a session can
    still end up on the CPU (``open_session`` then warns), which costs speed, not correctness."""
    if cfg.device == "cpu":
        return False
    return cfg.device == "cuda" or _gpu_problem("cuda") is None


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


def _names(providers: list[Provider]) -> list[str]:
    return [p if isinstance(p, str) else p[0] for p in providers]


class DeviceUnavailable(RuntimeError):
    """DLZOO_DEVICE=cuda, and the session did not get a GPU: start-up must fail, not fall back."""


def open_session(
    path_or_bytes: str | os.PathLike[str] | bytes, cfg: RuntimeConfig
) -> tuple[ort.InferenceSession, str]:
    """Create a session as ``cfg`` says; returns it and the provider it really runs on.

    ``device="cuda"`` without CUDA raises RuntimeError (a GPU asked for must be obtained);
    ``device="auto"`` falls back to CPU and logs one WARNING per process saying why.
    """
    model = path_or_bytes if isinstance(path_or_bytes, bytes) else os.fspath(path_or_bytes)
    providers = build_providers(cfg)
    why_not_gpu: str | None = None
    if cfg.device == "auto":
        why_not_gpu = _gpu_problem("cuda")
        if why_not_gpu is not None:
            _warn_once("auto-cpu", f"DLZOO_DEVICE=auto: running on CPU because {why_not_gpu}")
            providers = [CPU]
        elif cfg.tensorrt and (trt_problem := _gpu_problem("tensorrt")) is not None:
            _warn_once(
                "auto-no-trt",
                f"DLZOO_TENSORRT=1: using CUDA without TensorRT because {trt_problem}",
            )
            providers = [p for p in providers if _names([p])[0] != TENSORRT]
    elif cfg.device == "cuda":
        _preload_cuda_libraries()

    so = session_options(cfg)
    try:
        session = ort.InferenceSession(model, sess_options=so, providers=providers)
    except Exception as exc:
        if _names(providers) == [CPU]:
            raise
        if cfg.device == "cuda":
            raise DeviceUnavailable(
                f"DLZOO_DEVICE=cuda: creating a CUDA session failed ({exc}). {_GPU_HINT}"
            ) from exc
        _warn_once(
            "auto-cpu", f"DLZOO_DEVICE=auto: running on CPU because a CUDA session failed ({exc})"
        )
        session = ort.InferenceSession(model, sess_options=so, providers=[CPU])

    provider = session.get_providers()[0]
    requested = _names(providers)
    if cfg.device == "cuda" and provider not in GPU_PROVIDERS:
        problem = _gpu_problem("cuda")
        raise DeviceUnavailable(
            f"DLZOO_DEVICE=cuda: asked ONNX Runtime for {requested} but the session got "
            f"{session.get_providers()}"
            + (f"; {problem}" if problem else "")
            + f". {_GPU_HINT}. Set DLZOO_DEVICE=auto or cpu to run on CPU."
        )
    if cfg.device == "auto" and CUDA in requested and provider not in GPU_PROVIDERS:
        _warn_once(
            "auto-cpu",
            f"DLZOO_DEVICE=auto: ONNX Runtime could not use CUDA and runs on CPU. {_GPU_HINT}",
        )
    if TENSORRT in requested and provider != TENSORRT:
        _warn_once("no-trt", f"DLZOO_TENSORRT=1: TensorRT was not obtained; running on {provider}")
    return session, provider


# ---------------------------------------------------------------------------------- graph checks


def check_io(session: ort.InferenceSession, graph_io: card.GraphIO) -> list[str]:
    """Differences between the session's inputs/outputs and the card's; empty when they agree.

    Names must match both ways; dtypes as ORT reports them (``tensor(float)``...); ranks; an int
    dim in the card must be that int in the graph, a string (symbolic) dim must not be an int.
    """
    problems: list[str] = []
    for kind, specs, args in (
        ("input", graph_io.inputs, session.get_inputs()),
        ("output", graph_io.outputs, session.get_outputs()),
    ):
        by_name = {a.name: a for a in args}
        for spec in specs:
            arg = by_name.pop(spec.name, None)
            if arg is None:
                problems.append(f"{kind} {spec.name!r}: in the card, not in the graph")
                continue
            expected = _ORT_TYPES[spec.dtype]
            if arg.type != expected:
                problems.append(
                    f"{kind} {spec.name!r}: card dtype {spec.dtype} ({expected}), graph {arg.type}"
                )
            shape = list(arg.shape) if arg.shape is not None else None
            if shape is None or len(shape) != len(spec.shape):
                problems.append(f"{kind} {spec.name!r}: card shape {spec.shape}, graph {shape}")
                continue
            for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
                where = f"{kind} {spec.name!r} axis {axis}"
                if isinstance(want, int) and want != got:
                    shown = got if isinstance(got, int) else f"symbolic ({got!r})"
                    problems.append(f"{where}: card {want}, graph {shown}")
                elif isinstance(want, str) and isinstance(got, int):
                    problems.append(f"{where}: card symbolic {want!r}, graph fixed {got}")
        for name in by_name:
            problems.append(f"{kind} {name!r}: in the graph, not in the card")
    return problems


def warm_up(session: ort.InferenceSession, graph_io: card.GraphIO) -> list[Any]:
    """One inference on zeros shaped by the card (symbolic dims -> 1); returns the outputs."""
    feeds = {
        spec.name: np.zeros(
            [d if isinstance(d, int) else 1 for d in spec.shape], dtype=_NUMPY_TYPES[spec.dtype]
        )
        for spec in graph_io.inputs
    }
    return session.run(None, feeds)
