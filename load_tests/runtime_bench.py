"""In process: ONNX Runtime (configured by the service's own code) against PyTorch eager, and the
machine's compute ceiling.

- :func:`runtime_section`: every graph of every model in the zoo at batch 1 and 32. ORT sessions
  come from ``service.runtime.open_session(path, RuntimeConfig.from_env())``, exactly as the service
  opens them; PyTorch runs the same network (``load_tests.torch_models``) under ``inference_mode``
  with ``torch.set_num_threads`` equal to the sessions' intra-op threads. The two engines are timed
  in alternating rounds so that a noisy neighbour hits both.
- :func:`batch_curve`: ORT images/s at batch 1..64 for the served classifiers, to judge the
  serving efficiency at the batch size the server actually formed.
- :func:`ceiling_section`: GFLOP/s of a large float32 MatMul through ORT, and the fraction of it
  that ResNet-50 (3x224x224, 1000 classes, batch 32) reaches, its FLOPs counted from the ONNX graph.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper, shape_inference

from load_tests.common import ROOT, ours_defaults, zoo_cards
from load_tests.torch_models import as_torch, example_inputs, module_for
from service.card import load_card
from service.runtime import RuntimeConfig, open_session

log = logging.getLogger("bench.runtime")
CACHE = ROOT / "load_tests" / ".cache"


def timed(fn, budget: float, min_reps: int = 3, max_reps: int = 10_000) -> list[float]:
    """Seconds per call of ``fn`` over about ``budget`` seconds (after one untimed call)."""
    fn()
    times: list[float] = []
    end = time.perf_counter() + budget
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() < end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def alternate(fns: dict[str, callable], budget: float, rounds: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, timed in ``rounds`` alternating rounds."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k] += timed(fn, budget / rounds / len(fns))
    return {k: float(np.median(v)) for k, v in times.items()}


def _export_same_network(module, card, role: str, folder: Path) -> Path:
    """Export a random-weights module with the project's exporter, so ORT runs the same network."""
    from training.export import BATCH, Graph, export_graph

    io = card.io[role]
    names = [t.name for t in io.inputs]
    graph = Graph(
        module=module,
        make_inputs=lambda b, g: as_torch(example_inputs(card, role, b)),
        input_names=names,
        output_names=[t.name for t in io.outputs],
        dynamic={t.name: {0: BATCH} for t in io.inputs if isinstance(t.shape[0], str)},
    )
    path = folder / f"{card.name}-{role}.onnx"
    export_graph(graph, path)
    return path


def runtime_section(models: Path, runs: Path, budget: float, batches=(1, 32)) -> dict:
    cfg = RuntimeConfig.from_env()
    threads = cfg.intra_op_threads or os.cpu_count()
    torch.set_num_threads(threads)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="dlzoo-bench-"))
    for name, folder in zoo_cards(models).items():
        card = load_card(folder / "card.json")
        for role, f in card.files.items():
            try:
                module, source = module_for(card, role, runs)
                path = folder / f.path
                if source.startswith("random"):
                    path = _export_same_network(module, card, role, tmp)
                    source += "; exported again by training/export.py for ORT"
                session, provider = open_session(path, cfg)
                feeds1 = example_inputs(card, role, 1)
                with torch.inference_mode():
                    expected = module(*as_torch(feeds1))
                expected = expected[0] if isinstance(expected, (tuple, list)) else expected
                got = session.run(None, feeds1)[0]
                parity = float(np.max(np.abs(expected.float().numpy() - got)))
                for b in batches:
                    feeds = example_inputs(card, role, b)
                    args = as_torch(feeds)

                    def run_torch(args=args, module=module):
                        with torch.inference_mode():
                            module(*args)

                    med = alternate(
                        {
                            "ort": lambda feeds=feeds, session=session: session.run(None, feeds),
                            "torch": run_torch,
                        },
                        budget,
                    )
                    rows.append(
                        {
                            "model": name,
                            "version": card.version,
                            "task": card.task,
                            "role": role,
                            "batch": b,
                            "ort_ms": med["ort"] * 1e3,
                            "torch_ms": med["torch"] * 1e3,
                            "ort_items_per_s": b / med["ort"],
                            "torch_items_per_s": b / med["torch"],
                            "speedup": med["torch"] / med["ort"],
                            "provider": provider,
                            "weights": source,
                            "parity_max_abs_diff": parity,
                        }
                    )
                    log.info(
                        "runtime %s/%s b=%d: ort %.3f ms, torch %.3f ms (x%.2f)",
                        name,
                        role,
                        b,
                        med["ort"] * 1e3,
                        med["torch"] * 1e3,
                        med["torch"] / med["ort"],
                    )
            except Exception as exc:
                log.exception("runtime %s/%s failed", name, role)
                rows.append({"model": name, "role": role, "error": f"{type(exc).__name__}: {exc}"})
    return {
        "threads": threads,
        "intra_op_threads_setting": cfg.intra_op_threads,
        "rows": rows,
        "note": "ORT: service.runtime.open_session(RuntimeConfig.from_env()); torch: eager, "
        f"inference_mode, torch.set_num_threads({threads}); medians of alternating rounds",
    }


def serving_sessions() -> int:
    """How many classifier sessions the service runs side by side with its default settings: one per
    front worker when the front classifies (DLZOO_CLASSIFY_IN, on a CPU), else one per Inference
    worker. The efficiency's denominator must be what that many sessions do in process."""
    settings, in_front = ours_defaults()
    return settings.front_workers if in_front else settings.inference_workers


def parallel_rate(
    sessions: list, feeds: dict, batch: int, seconds: float
) -> tuple[float, list[int]]:
    """Items/s of ``len(sessions)`` sessions running the same feeds at once, one thread each (ONNX
    Runtime releases the GIL while it runs): what that many worker processes could do at most.
    Also the calls each session made."""
    import threading

    for session in sessions:
        session.run(None, feeds)
    counts = [0] * len(sessions)
    start = threading.Barrier(len(sessions) + 1)
    stop = threading.Event()

    def work(i: int) -> None:
        start.wait()
        while not stop.is_set():
            sessions[i].run(None, feeds)
            counts[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) * batch / (time.perf_counter() - t0), counts


def batch_curve(
    models: Path,
    names: list[str],
    budget: float,
    batches=(1, 2, 4, 8, 16, 32, 64),
    parallel: int = 1,
) -> dict:
    """name -> {batch: ORT items/s}, sessions as the service opens them; with ``parallel`` > 1,
    that many sessions at once (see :func:`parallel_rate`)."""
    cfg = RuntimeConfig.from_env()
    cards = zoo_cards(models)
    out = {}
    for name in names:
        if name not in cards:
            continue
        card = load_card(cards[name] / "card.json")
        sessions = [
            open_session(cards[name] / card.files["model"].path, cfg)[0] for _ in range(parallel)
        ]
        curve = {}
        for b in batches:
            feeds = example_inputs(card, "model", b)
            if parallel == 1:
                curve[b] = b / float(
                    np.median(
                        timed(
                            lambda feeds=feeds, sessions=sessions: sessions[0].run(None, feeds),
                            budget / len(batches),
                        )
                    )
                )
            else:
                curve[b] = parallel_rate(sessions, feeds, b, budget / len(batches))[0]
        out[name] = curve
        log.info(
            "batch curve %s (%d session(s) at once): %s",
            name,
            parallel,
            {b: round(v) for b, v in curve.items()},
        )
    return out


# ------------------------------------------------------------------------------ compute ceiling


def count_flops(model: onnx.ModelProto, batch: int) -> dict[str, float]:
    """FLOPs (multiply and add counted as 2) of Conv, Gemm and MatMul at ``batch``, from the graph's
    shapes after ONNX shape inference; other operators (BN, ReLU, Add, pooling) are not counted."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    model = shape_inference.infer_shapes(model)
    shapes = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    flops: dict[str, float] = {"Conv": 0.0, "Gemm": 0.0, "MatMul": 0.0}
    for node in model.graph.node:
        if node.op_type == "Conv":
            out, w = (
                shapes[node.output[0]],
                shapes[node.input[1]],
            )  # (N, Co, Ho, Wo), (Co, Ci/g, kh, kw)
            flops["Conv"] += 2.0 * np.prod(out, dtype=np.float64) * np.prod(w[1:], dtype=np.float64)
        elif node.op_type == "Gemm":
            a = shapes[node.input[0]]
            out = shapes[node.output[0]]
            trans_a = next((att.i for att in node.attribute if att.name == "transA"), 0)
            k = a[0] if trans_a else a[1]
            flops["Gemm"] += 2.0 * out[0] * out[1] * k
        elif node.op_type == "MatMul":
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            flops["MatMul"] += 2.0 * np.prod(out, dtype=np.float64) * a[-1]
    flops["total"] = sum(flops.values())
    return flops


def matmul_model(n: int) -> onnx.ModelProto:
    a = helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [n, n])
    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul", [a], [c], [b]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # helper writes the newest IR, which this ORT may refuse
    return model


def resnet50_graph() -> Path:
    """ResNet-50 at ImageNet size exported by the project's exporter (cached; takes ~1 min)."""
    from training.architectures import resnet50
    from training.export import BATCH, Graph, export_graph

    path = CACHE / f"resnet50-224-torch{torch.__version__}.onnx"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = resnet50(num_classes=1000, in_channels=3, input_size=(224, 224)).eval()
    graph = Graph(
        module=net,
        make_inputs=lambda b, g: (torch.rand(b, 3, 224, 224, generator=g),),
        input_names=["pixels"],
        output_names=["logits"],
        dynamic={"pixels": {0: BATCH}},
    )
    tmp = path.with_suffix(".tmp.onnx")
    export_graph(graph, tmp)
    tmp.replace(path)
    return path


def ceiling_section(
    budget: float, sizes: tuple[int, ...] = (1024, 2048, 4096), batch: int = 32, passes: int = 2
) -> dict:
    """MatMul GFLOP/s (square, ``sizes``) and ResNet-50's, measured in ``passes`` interleaved
    passes.

    A shared machine only ever slows a run down, so each figure is the fastest run (best of all
    passes); medians are kept beside them. The ceiling is the best MatMul size.
    """
    threads = os.cpu_count()
    cfg = dataclasses.replace(RuntimeConfig.from_env(), intra_op_threads=threads)
    t0 = time.perf_counter()
    path = resnet50_graph()
    export_s = time.perf_counter() - t0
    flops = count_flops(onnx.load(str(path)), batch)
    rn, provider = open_session(path, cfg)
    pixels = np.random.default_rng(2).random((batch, 3, 224, 224), dtype=np.float32)
    sessions = {}
    for n in sizes:
        sessions[n] = (
            open_session(matmul_model(n).SerializeToString(), cfg)[0],
            np.random.default_rng(1).standard_normal((n, n), dtype=np.float32),
        )
    mm_times: dict[int, list[float]] = {n: [] for n in sizes}
    rn_times: list[float] = []
    share = budget / passes / 2
    for _ in range(passes):
        for n, (mm, x) in sessions.items():
            mm_times[n] += timed(
                lambda mm=mm, x=x: mm.run(None, {"a": x}), share / len(sizes), min_reps=2
            )
        rn_times += timed(lambda: rn.run(None, {"pixels": pixels}), share, min_reps=2)
    matmuls = [
        {
            "n": n,
            "best_s": min(t),
            "median_s": float(np.median(t)),
            "reps": len(t),
            "gflops": 2.0 * n**3 / min(t) / 1e9,
            "gflops_median": 2.0 * n**3 / float(np.median(t)) / 1e9,
        }
        for n, t in mm_times.items()
    ]
    for m in matmuls:
        log.info(
            "ceiling: MatMul %d: %.1f GFLOP/s (median %.1f)",
            m["n"],
            m["gflops"],
            m["gflops_median"],
        )
    best = max(matmuls, key=lambda m: m["gflops"])
    gflops = best["gflops"]
    rn_best, rn_median = min(rn_times), float(np.median(rn_times))
    rn_gflops = flops["total"] / rn_best / 1e9
    log.info(
        "ceiling: resnet50 b=%d: %.3f s, %.1f GFLOP/s (%.0f%% of MatMul)",
        batch,
        rn_best,
        rn_gflops,
        100 * rn_gflops / gflops,
    )
    return {
        "threads": threads,
        "provider": provider,
        "matmul": best,
        "matmuls": matmuls,
        "resnet50": {
            "batch": batch,
            "input": [3, 224, 224],
            "graph_gflop": flops["total"] / 1e9,
            "graph_gflop_by_op": {k: v / 1e9 for k, v in flops.items() if k != "total"},
            "gflop_per_image": flops["total"] / batch / 1e9,
            "best_s": rn_best,
            "median_s": rn_median,
            "reps": len(rn_times),
            "images_per_s": batch / rn_best,
            "gflops": rn_gflops,
            "gflops_median": flops["total"] / rn_median / 1e9,
            "export_or_cache_s": export_s,
        },
        "fraction": rn_gflops / gflops,
        "fraction_of_medians": (flops["total"] / rn_median)
        / (2.0 * best["n"] ** 3 / best["median_s"]),
        "note": f"ORT as the service configures it but intra_op_threads={threads} (both cores) for "
        "both measurements; fastest of interleaved runs; FLOPs = 2 x multiply-adds of "
        "Conv/Gemm/MatMul from ONNX shape inference (BN, ReLU, Add, pooling not counted)",
    }
