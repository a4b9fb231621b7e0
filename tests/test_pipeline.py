"""The training pipeline end to end: registry -> fit -> checkpoint -> export gate -> model
folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from service.card import load_card, sha256_file
from training import pipeline, recipes, tasks
from training.export import ExportError, Graph, check_parity, export_graph, publish
from training.loop import TrainConfig, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIERS = [r.name for r in recipes.RECIPES.values() if r.task == "classify"]
# Paper-depth ResNets are slow to export even at tiny width; 18 and 50 cover both block types.
EXPORTED = [n for n in CLASSIFIERS if n not in ("resnet34", "resnet101", "resnet152")]


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        recipes.register(recipes.RECIPES["lenet5"])
    with pytest.raises(ValueError, match="unknown architecture"):
        recipes.get("lenet6")
    assert {"mlp", "lenet5", "alexnet", "vgg16", "resnet18"} <= {
        r.name for r in recipes.zoo("quick")
    }
    assert {r.name for r in recipes.zoo("full")} == set(recipes.RECIPES)


def test_every_task_is_a_plug_in_with_train_export_rebuild():
    assert {r.task for r in recipes.RECIPES.values()} == set(tasks.TASKS)
    for name in tasks.TASKS:
        module = tasks.get(name)
        assert all(callable(getattr(module, f, None)) for f in ("train", "export", "rebuild"))
    with pytest.raises(ValueError, match="unknown task"):
        tasks.get("regression")


def test_train_config_validates():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="batch size"):
        TrainConfig(batch_size="most")
    assert TrainConfig(batch_size="full").batch_size == "full"
    assert TrainConfig(batch_size="32").batch_size == 32
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"epochs": 1, "learning_rate": 0.1})


@pytest.mark.parametrize("name", EXPORTED)
def test_dry_run_trains_exports_with_parity_and_cards(name, tmp_path):
    folder = pipeline.train(
        name,
        profile="dry-run",
        models_root=tmp_path / "models",
        runs_root=tmp_path / "runs",
        progress=False,
    )
    assert folder == tmp_path / "models" / name / "1"
    card = load_card(folder / "card.json")
    assert card.name == name and card.version == 1 and card.task == "classify"
    assert card.parity["model"].max_abs_diff <= card.parity["model"].tolerance <= 1e-3
    assert card.parity["model"].batch_sizes == [1, 7]
    path = folder / card.files["model"].path
    assert sha256_file(path) == card.files["model"].sha256
    assert not list(folder.glob("*.data")), "weights must live inside the one ONNX file"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # the graph runs at a batch size never seen at export, and the checkpoint rebuilds the model
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    c, (h, w) = card.preprocess.channels, card.preprocess.size
    x = np.random.default_rng(0).random((5, c, h, w), dtype=np.float32)
    ckpt = load_checkpoint(tmp_path / "runs" / name / "best.pt")
    with torch.inference_mode():
        expected = tasks.rebuild(ckpt)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sess.run(None, {"pixels": x})[0], expected, atol=1e-4, rtol=1e-3)
    for extra in ("card.md", "metrics.jsonl", "learning_curves.png", "confusion.png"):
        assert (folder / extra).stat().st_size > 0
    assert len(card.labels) == 10 and card.preprocess.normalization_in_graph


def test_versions_only_grow_and_failed_export_leaves_nothing(tmp_path):
    models = tmp_path / "models"
    first = pipeline.train(
        "lenet5", profile="dry-run", models_root=models, runs_root=tmp_path / "r"
    )
    second = pipeline.export_checkpoint(tmp_path / "r" / "lenet5" / "best.pt", models)
    assert (first.name, second.name) == ("1", "2")
    assert load_card(second / "card.json").version == 2

    class Broken(torch.nn.Module):  # ONNX cannot match it: its answer changes every call
        def forward(self, pixels):
            return pixels.flatten(1)[:, :10] + torch.rand(pixels.shape[0], 10)

    graph = Graph(
        Broken(),
        lambda b, g: (torch.rand(b, 1, 8, 8, generator=g),),
        ["pixels"],
        ["logits"],
        {"pixels": {0: "batch"}},
    )
    before = sorted(p.name for p in models.rglob("*"))
    with pytest.raises(ExportError, match="differs from torch"):
        publish(models, {"name": "lenet5"}, {"model": graph})
    assert sorted(p.name for p in models.rglob("*")) == before, "a failed export must write nothing"


def test_parity_gate_and_dynamic_axis_check(tmp_path):
    lin = torch.nn.Linear(4, 3)
    graph = Graph(
        lin, lambda b, g: (torch.rand(b, 4, generator=g),), ["x"], ["y"], {"x": {0: "batch"}}
    )
    io = export_graph(graph, tmp_path / "g.onnx")
    assert io.inputs[0].shape == ["batch", 4]
    assert check_parity(graph, tmp_path / "g.onnx").max_abs_diff < 1e-5
    with torch.no_grad():
        lin.weight.add_(1.0)  # torch now disagrees with the exported file
    with pytest.raises(ExportError, match="differs"):
        check_parity(graph, tmp_path / "g.onnx")


def test_resume_continues_an_interrupted_run(tmp_path):
    opts = {"epochs": 2, "max_batches": 1, "limit": 64, "patience": None}
    pipeline.train(
        "mlp",
        profile="dry-run",
        options={**opts, "epochs": 1},
        models_root=tmp_path / "m",
        runs_root=tmp_path / "r",
    )
    ckpt = load_checkpoint(tmp_path / "r" / "mlp" / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and ckpt["model_args"] == recipes.get("mlp").resolved("dry-run")[0]
    pipeline.train(
        "mlp",
        profile="dry-run",
        options=opts,
        models_root=tmp_path / "m",
        runs_root=tmp_path / "r",
        resume=True,
    )
    ckpt = load_checkpoint(tmp_path / "r" / "mlp" / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and [h["epoch"] for h in ckpt["history"]] == [1, 2]
    lines = (tmp_path / "r" / "mlp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]


def test_resume_takes_the_runs_own_settings(tmp_path):
    """`train lenet5 --epochs 30 --optimizer momentum` then `train lenet5 --resume` (the README's
    pair): the resumed run keeps momentum, not the recipe's Adam, unless told otherwise."""
    dirs = {"models_root": tmp_path / "m", "runs_root": tmp_path / "r"}
    first = {"epochs": 1, "optimizer": "momentum", "lr": 0.05}
    pipeline.train("lenet5", profile="dry-run", options=first, **dirs)
    pipeline.train("lenet5", profile="dry-run", resume=True, options={"epochs": 2}, **dirs)
    ckpt = load_checkpoint(tmp_path / "r" / "lenet5" / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and ckpt["config"]["optimizer"] == "momentum"
    assert ckpt["config"]["lr"] == 0.05


def test_batch_gradient_descent_and_mse_loss_learn(tmp_path):
    # 'full' = one step per epoch over all examples; the seed's squared error on sigmoid outputs
    folder = pipeline.train(
        "mlp",
        profile="dry-run",
        options={
            "batch_size": "full",
            "loss": "mse",
            "optimizer": "sgd",
            "lr": 0.5,
            "epochs": 30,
            "max_batches": None,
            "limit": 300,
            "augment": "none",
            "patience": None,
        },
        models_root=tmp_path / "m",
        runs_root=tmp_path / "r",
    )
    history = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 30
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]


def _cli(*args, cwd=ROOT, extra_env=None, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_end_to_end(tmp_path):
    listed = _cli("list")
    assert listed.returncode == 0 and "resnet152" in listed.stdout and "lenet5" in listed.stdout
    out = _cli(
        "--models",
        str(tmp_path / "m"),
        "--runs",
        str(tmp_path / "r"),
        "train",
        "lenet5",
        "--dry-run",
        "--optimizer",
        "rmsprop",
        "--batch-size",
        "16",
    )
    assert out.returncode == 0, out.stderr
    card = load_card(tmp_path / "m" / "lenet5" / "1" / "card.json")
    assert card.training["optimizer"] == "rmsprop" and card.training["batch_size"] == 16
    bad = _cli("train", "lenet6")
    assert bad.returncode == 2 and "unknown architecture" in bad.stderr


def test_torchrun_data_parallel_on_two_cpu_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "training",
            "--quiet",
            "--models",
            str(tmp_path / "m"),
            "--runs",
            str(tmp_path / "r"),
            "train",
            "lenet5",
            "--dry-run",
            "--epochs",
            "2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    card = load_card(tmp_path / "m" / "lenet5" / "1" / "card.json")
    assert card.metrics["epochs_run"] == 2
    assert not (tmp_path / "m" / "lenet5" / "2").exists(), "only rank 0 publishes"


def test_the_seed_fixes_the_whole_run_initial_weights_included(tmp_path):
    """Two runs with the same seed end with the same weights; another seed does not."""

    def weights(seed: int, where: str) -> dict:
        pipeline.train(
            "lenet5",
            profile="dry-run",
            options={"seed": seed},
            models_root=tmp_path / where / "m",
            runs_root=tmp_path / where / "r",
            progress=False,
        )
        return load_checkpoint(tmp_path / where / "r" / "lenet5" / "best.pt")["model"]

    a, b, c = weights(3, "a"), weights(3, "b"), weights(4, "c")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
