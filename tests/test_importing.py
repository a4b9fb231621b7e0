"""Bring your own model: torchvision state dicts and ONNX graphs dlzoo did not write, imported with
the CLI (``python -m training import ...``) and served by a real ``bentoml serve``; each answer
checked against a reference computed here, never by dlzoo's own code."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision_reference as tv
from conftest import Server
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
TORCHVISION_ARCHS = ("resnet18", "resnet50", "vgg11_bn", "alexnet")
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)  # what the foreign ONNX classifier expects
ONNX_SIZE = (96, 128)  # (H, W), fixed in the graph with a batch of 1


def cli(models: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "training", "--models", str(models), "import", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def photo(width: int = 800, height: int = 600) -> bytes:
    """A photo-sized RGB PNG: colour gradients, a few discs and noise, off-centre detail."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    img = np.stack([xx, yy, 0.5 + 0.5 * np.sin(9 * xx * yy)], axis=-1)
    for _ in range(12):
        cy, cx, r = rng.random() * 0.75, rng.random(), 0.02 + 0.1 * rng.random()
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.random(3)
    img = np.clip(img + rng.normal(0, 0.04, img.shape), 0, 1)
    buf = io.BytesIO()
    Image.fromarray((img * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def reference_pixels(data: bytes, size: tuple[int, int], mode: str, resize: str) -> np.ndarray:
    """The upload preprocessed independently: Pillow as torchvision's transforms use it. crop:
    shorter side to 256/224 of the size (longer side truncated), centre crop; stretch: resize."""
    img = Image.open(io.BytesIO(data)).convert(mode)
    (h, w), (W, H) = size, img.size
    if resize == "crop":
        short = round(h * 256 / 224)  # square sizes only here
        nw, nh = (short, int(short * H / W)) if W <= H else (int(short * W / H), short)
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = int(round((nw - w) / 2)), int(round((nh - h) / 2))
        img = img.crop((left, top, left + w, top + h))
    else:
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    a = np.asarray(img, dtype=np.float64) / 255.0
    return (a[None] if a.ndim == 2 else a.transpose(2, 0, 1))[None]  # (1, C, H, W)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def mobile_net(in_channels: int, classes: int, probabilities: bool, x: torch.Tensor) -> nn.Module:
    """A MobileNet-style classifier: depthwise separable blocks with batch norm and ReLU6; its last
    layer scaled so that its logits for ``x`` spread (std 2), as a trained model's would."""

    def separable(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU6(),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(),
        ]

    torch.manual_seed(in_channels)
    layers = [nn.Conv2d(in_channels, 16, 3, 2, 1), nn.ReLU6(), *separable(16, 32)]
    layers += [*separable(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes)]
    net = nn.Sequential(*layers, *([nn.Softmax(dim=1)] if probabilities else [])).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    last = net[-2 if probabilities else -1]
    with torch.no_grad():
        scale = 2.0 / float(net[: len(layers)](x).std())
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    return net


def export_onnx(net: nn.Module, shape: tuple[int, ...], path: Path, external: bool = False) -> Path:
    """torch.onnx.export with a fixed input shape (batch 1 included), one file unless asked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.rand(*shape),),
            str(path),
            input_names=["image"],
            output_names=["scores"],
            external_data=external,
            verbose=False,
        )
    return path


def iris_onnx(path: Path) -> Path:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(x.astype(np.float32), y)
    onx = to_onnx(model, x[:1].astype(np.float32), options={"zipmap": False})
    path.write_bytes(onx.SerializeToString())
    return path


def readme_commands() -> list[str]:
    """The shell lines of the README's "Bring your own model" bash block."""
    section = (ROOT / "README.md").read_text().split("## Bring your own model", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.replace("\\\n", " ").splitlines()]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Every kind of import in one repository, the references computed before any is served."""
    work = tmp_path_factory.mktemp("byom")
    models = work / "models"
    data = photo()
    refs: dict[str, np.ndarray] = {}
    mean = torch.tensor(tv.IMAGENET_MEAN)[:, None, None]
    x = (torch.from_numpy(reference_pixels(data, (224, 224), "RGB", "crop")) - mean) / torch.tensor(
        tv.IMAGENET_STD
    )[:, None, None]
    for arch in TORCHVISION_ARCHS:
        sd = tv.state_dict(arch, seed=len(arch))
        logits = tv.forward(arch, sd, x)[0]
        scale = 3.0 / float(logits.std())  # logits spread like a trained model's, ~3
        for k in (f"{tv.head(arch)}.weight", f"{tv.head(arch)}.bias"):
            sd[k] = (sd[k].double() * scale).float()
        refs[arch] = softmax(logits.numpy() * scale)
        torch.save(sd, work / f"{arch}.pth")
        del sd
        args = ["torchvision", arch, work / f"{arch}.pth", "--name", arch, "--labels", "imagenet"]
        out = cli(models, *args)
        assert out.returncode == 0, out.stderr[-3000:]

    # a foreign ONNX classifier expecting normalized RGB, and a greyscale one ending in softmax
    pixels = reference_pixels(data, ONNX_SIZE, "RGB", "stretch")
    pixels = ((pixels - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]).astype(
        np.float32
    )
    rgb = export_onnx(mobile_net(3, 5, False, torch.from_numpy(pixels)), (1, 3, *ONNX_SIZE),
                      work / "mobile.onnx")  # fmt: skip
    (work / "labels.txt").write_text("".join(f"class {i}\n" for i in range(5)))
    flags = ["--size", *ONNX_SIZE, "--channels", "3", "--resize", "stretch", "--mean", *MEAN]
    flags += ["--std", *STD, "--output", "logits", "--labels", work / "labels.txt"]
    out = cli(models, "onnx", rgb, "--name", "mobile", "--task", "classify", *flags)
    assert out.returncode == 0, out.stderr[-3000:]
    session = ort.InferenceSession(str(rgb), providers=["CPUExecutionProvider"])
    refs["mobile"] = softmax(session.run(None, {"image": pixels})[0][0])  # the file itself

    pixels = reference_pixels(data, (64, 64), "L", "crop").astype(np.float32)
    grey = export_onnx(mobile_net(1, 4, True, torch.from_numpy(pixels)), (1, 1, 64, 64),
                       work / "grey.onnx")  # fmt: skip
    flags = ["--channels", "1", "--resize", "crop", "--output", "probabilities"]
    out = cli(models, "onnx", grey, "--name", "grey", *flags)
    assert out.returncode == 0, out.stderr[-3000:]
    refs["grey"] = ort.InferenceSession(str(grey)).run(None, {"image": pixels})[0][0]
    out = cli(models, "onnx", iris_onnx(work / "iris.onnx"), "--name", "iris", "--task", "tensor")
    assert out.returncode == 0, out.stderr[-3000:]

    # the README's commands as written, from a folder holding the repository's .venv and examples
    readme = tmp_path_factory.mktemp("readme")
    (readme / ".venv").symlink_to(Path(sys.executable).parents[1])
    (readme / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DLZOO_MODELS": str(models)}
    for command in readme_commands():
        run = subprocess.run(
            ["bash", "-c", command],
            cwd=readme,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, f"{command}\n{run.stderr[-3000:]}"
    return {"models": models, "work": work, "photo": data, "refs": refs}


@pytest.fixture(scope="module")
def client(imported):
    with Server(imported["models"], env={"DLZOO_FRONT_WORKERS": "1"}) as srv:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            yield c


def classify(client, data: bytes, model: str, top_k: int) -> httpx.Response:
    files = {"image": ("photo.png", data, "application/octet-stream")}
    return client.post("/classify", files=files, data={"model": model, "top_k": str(top_k)})


@pytest.mark.parametrize("name", [*TORCHVISION_ARCHS, "mobile", "grey"])
def test_classify_equals_the_reference(client, imported, name):
    want = imported["refs"][name]
    resp = classify(client, imported["photo"], name, len(want))
    assert resp.status_code == 200, resp.text
    got = np.zeros(len(want))
    for p in resp.json()["predictions"]:
        got[p["index"]] = p["probability"]
    # log-probabilities are logits up to a constant: spread out, so a wrong layer would show
    assert np.log(want).std() > 0.5, "a near-uniform reference would not catch a wrong layer"
    assert np.max(np.abs(got - want)) <= 1e-4, (name, np.max(np.abs(got - want)))
    if name in TORCHVISION_ARCHS:
        labels = (ROOT / "training" / "data" / "imagenet_labels.txt").read_text().splitlines()
        assert [p["label"] for p in resp.json()["predictions"][:3]] == [
            labels[i] for i in np.argsort(-want, kind="stable")[:3]
        ]


def test_cards_say_where_models_came_from(imported):
    from service.card import load_card, sha256_file

    models, work = imported["models"], imported["work"]
    mobile = load_card(models / "mobile" / "1" / "card.json")
    assert [(t.name, t.dtype, t.shape) for t in mobile.io["model"].inputs] == [
        ("image", "float32", [1, 3, *ONNX_SIZE])  # the graph's fixed batch of 1, reported
    ]
    assert mobile.preprocess.resize == "stretch" and mobile.preprocess.normalization_in_graph
    assert mobile.origin.sha256 == sha256_file(work / "mobile.onnx")
    assert mobile.origin.producer.startswith("pytorch") and mobile.origin.opset >= 18
    assert load_card(models / "grey" / "1" / "card.json").output == "probabilities"
    resnet = load_card(models / "resnet50" / "1" / "card.json")
    assert resnet.architecture == "resnet50" and resnet.preprocess.resize == "crop"
    assert resnet.preprocess.mean == list(tv.IMAGENET_MEAN) and len(resnet.labels) == 1000
    for name in ("mobile", "resnet50"):
        md = (models / name / "1" / "card.md").read_text()
        assert (
            "not measured here" in md
            and load_card(models / name / "1" / "card.json").origin.sha256 in md
        )


def test_tensor_model_io_from_its_graph_listed_and_refused_by_classify(client, imported):
    from service.card import load_card

    card = load_card(imported["models"] / "iris" / "1" / "card.json")
    graph = onnx.load(str(imported["work"] / "iris.onnx")).graph
    pairs = [(card.io["model"].inputs, graph.input), (card.io["model"].outputs, graph.output)]
    for specs, values in pairs:
        assert [t.name for t in specs] == [v.name for v in values]
        for t, v in zip(specs, values):
            dims = v.type.tensor_type.shape.dim
            assert t.shape == [d.dim_value if d.HasField("dim_value") else "?" for d in dims]
    assert card.task == "tensor" and card.preprocess is None and card.labels is None
    listed = {m["name"]: m for m in client.get("/models").json()}
    assert listed["iris"]["status"] == "ready" and listed["iris"]["task"] == "tensor"
    assert {"tiny-cnn", "resnet18-imagenet", "iris"} <= set(listed)  # the README's imports
    resp = classify(client, imported["photo"], "iris", 1)
    assert resp.status_code == 400 and "tensor" in resp.text


def test_readme_models_serve(client, imported):
    resp = classify(client, imported["photo"], "resnet18-imagenet", 3)
    labels = set((ROOT / "training" / "data" / "imagenet_labels.txt").read_text().splitlines())
    assert resp.status_code == 200 and {p["label"] for p in resp.json()["predictions"]} <= labels
    resp = classify(client, imported["photo"], "tiny-cnn", 4)
    assert resp.status_code == 200 and len(resp.json()["predictions"]) == 4


def test_inference_catalog_opens_tensor_sessions_and_batches_fixed_graphs(imported, tmp_path):
    """Tensor models get sessions where non-classifiers run; a batch-1 classifier is called one
    image at a time inside a batch, and probabilities are not put through softmax again."""
    from typing import get_args

    from service.card import Task
    from service.classify import classify_items
    from service.repository import Catalog
    from service.runtime import RuntimeConfig

    for name in ("iris", "mobile", "grey"):  # the small ones: opening VGG costs seconds
        shutil.copytree(imported["models"] / name, tmp_path / name)
    cfg = RuntimeConfig.from_env({"DLZOO_DEVICE": "cpu"})
    others = Catalog(tmp_path, runtime=cfg, tasks=set(get_args(Task)) - {"classify"})
    assert others.resolve("iris").sessions and not others.resolve("mobile").sessions
    front = Catalog(tmp_path, runtime=cfg, tasks=["classify"])
    rng = np.random.default_rng(0)
    items = [
        {
            "model": "grey@1",
            "pixels": rng.random((1, 64, 64), dtype=np.float32),
            "top_k": 4,
            "sent": 0.0,
        }
        for _ in range(3)
    ]
    results, calls = classify_items(front, items)
    assert [c.items for c in calls] == [3]
    session = ort.InferenceSession(str(imported["work"] / "grey.onnx"))
    for item, result in zip(items, results):
        want = session.run(None, {"image": item["pixels"][None]})[0][0]
        got = {p["index"]: p["probability"] for p in result["predictions"]}
        np.testing.assert_allclose([got[i] for i in range(4)], want, atol=1e-6)


# ------------------------------------------------------------------------------------ bad imports


def _bad_files(folder: Path) -> dict[str, Path]:
    from onnx import TensorProto, helper

    files = {"text": folder / "notes.onnx"}
    files["text"].write_text("not a graph\n")
    net = mobile_net(3, 5, False, torch.rand(1, 3, 32, 32))
    files["external"] = export_onnx(net, (1, 3, 32, 32), folder / "ext.onnx", external=True)
    files["mobile"] = export_onnx(net, (1, 3, 32, 32), folder / "mobile.onnx")
    relu = helper.make_node("Relu", ["x"], ["y"])
    shapeless = helper.make_graph(
        [relu],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(shapeless, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what ONNX Runtime 1.31 reads
    files["shapeless"] = folder / "shapeless.onnx"
    onnx.save(model, str(files["shapeless"]))
    files["labels"] = folder / "three.txt"
    files["labels"].write_text("a\nb\nc\n")
    sd = tv.state_dict("resnet18")
    del sd["layer2.0.downsample.0.weight"]
    torch.save(sd, folder / "missing.pth")
    sd = tv.state_dict("resnet18")
    sd["conv1.weight"] = sd["conv1.weight"][:, :, :5, :5].clone()
    torch.save(sd, folder / "shape.pth")
    torch.save([torch.zeros(3), "not a state dict"], folder / "list.pth")
    torch.save(net, folder / "module.pth")  # a whole pickled model
    return files


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["onnx", "{text}", "--name", "m"], r"notes\.onnx is not an ONNX model"),
        (["onnx", "{external}", "--name", "m"], r"external data"),
        (["onnx", "{shapeless}", "--name", "m", "--task", "tensor"], r"input 'x' has no shape"),
        (["onnx", "{mobile}", "--name", "m", "--labels", "{labels}"], r"3 labels.* 5 classes"),
        (["torchvision", "resnet9", "{dir}/missing.pth", "--name", "m"], r"unknown architecture"),
        (
            ["torchvision", "resnet18", "{dir}/missing.pth", "--name", "m"],
            r"1 missing keys: layer2\.0\.downsample\.0\.weight",
        ),
        (
            ["torchvision", "resnet18", "{dir}/shape.pth", "--name", "m"],
            r"conv1\.weight is \(64, 3, 5, 5\) in the file, \(64, 3, 7, 7\)",
        ),
        (["torchvision", "resnet18", "{dir}/list.pth", "--name", "m"], r"a list, not a state dict"),
        (["torchvision", "alexnet", "{dir}/module.pth", "--name", "m"], r"is not a state dict"),
    ],
)
def test_bad_import_is_a_clear_error_and_leaves_nothing(bad, tmp_path, capsys, args, message):
    from training.__main__ import main

    names = {k: str(v) for k, v in bad.items()} | {"dir": str(bad["text"].parent)}
    models = tmp_path / "models"
    code = main(["--models", str(models), "import", *(a.format(**names) for a in args)])
    err = capsys.readouterr().err
    assert code != 0 and re.search(message, err), err
    assert not models.exists() or not any(models.iterdir())


def test_bad_import_exit_status_through_the_cli(bad, tmp_path):
    out = cli(tmp_path / "models", "onnx", bad["text"], "--name", "m")
    assert out.returncode == 2 and "is not an ONNX model" in out.stderr
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


# torchvision's published parameter counts (its weights' metadata, "num_params")
NUM_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


@pytest.mark.parametrize("arch", sorted(NUM_PARAMS))
def test_every_importable_architecture_has_torchvisions_layout(arch):
    """dlzoo's architecture as the import builds it: torchvision's keys and shapes, and its
    parameter count (checked on the meta device: shapes, no storage)."""
    from training import architectures
    from training.importing import TORCHVISION

    assert set(TORCHVISION) == set(NUM_PARAMS)
    with torch.device("meta"):
        net = getattr(architectures, arch)(
            num_classes=1000, in_channels=3, input_size=(224, 224), **TORCHVISION[arch]
        )
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in tv.state_dict(arch, meta=True).items()}
    assert ours == theirs
    assert sum(p.numel() for p in net.parameters()) == NUM_PARAMS[arch]


def v2_infer(client, model: str, name: str, x: np.ndarray) -> list[np.ndarray]:
    body = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}  # fmt: skip
    resp = client.post(f"/v2/models/{model}/infer", json=body)
    assert resp.status_code == 200, resp.text
    return [np.asarray(o["data"], np.float64).reshape(o["shape"]) for o in resp.json()["outputs"]]


def test_imported_graphs_answer_through_v2_as_the_files_do_in_onnx_runtime(client, imported):
    """The tabular (tensor) model and the image classifier through the Open Inference Protocol,
    each equal to running the imported file itself in ONNX Runtime."""
    work, rng = imported["work"], np.random.default_rng(0)
    rows = rng.uniform(0, 8, (5, 4)).astype(np.float32)  # iris-like measurements
    iris = ort.InferenceSession(str(work / "iris.onnx"), providers=["CPUExecutionProvider"])
    want = iris.run(None, {iris.get_inputs()[0].name: rows})
    got = v2_infer(client, "iris", iris.get_inputs()[0].name, rows)
    assert np.array_equal(got[0].ravel(), want[0].ravel())  # labels
    assert np.max(np.abs(got[1] - want[1])) <= 1e-6  # probabilities
    pixels = rng.random((1, 3, *ONNX_SIZE), dtype=np.float32)  # the service's [0, 1] contract
    mobile = ort.InferenceSession(str(work / "mobile.onnx"), providers=["CPUExecutionProvider"])
    normalized = (pixels - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[
        :, None, None
    ]
    want = mobile.run(None, {"image": normalized.astype(np.float32)})[0]
    got = v2_infer(client, "mobile", "image", pixels)[0]
    assert np.max(np.abs(got - want)) <= 1e-4, np.max(np.abs(got - want))
