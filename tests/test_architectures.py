"""The image classifier builders: shapes, a training step, paper-size parameter counts, names.

Parametrized over every builder at a small configuration (1-channel 32x32 input, narrow width).
Paper-size models are built on the ``meta`` device: parameters get shapes but no storage or
initialization, so counting 138M VGG-16 parameters costs milliseconds.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from training import architectures as arch

NUM_CLASSES = 7  # not 10, so a hard-coded class count would show

# builder name -> small family kwargs (JSON-serializable, as stored in a checkpoint's model_args)
SMALL: dict[str, dict] = {
    "mlp": {"hidden": [32, 16], "activation": "tanh", "dropout": 0.1, "batch_norm": True},
    "lenet5": {},
    "alexnet": {"width": 0.125, "small_input": True, "dropout": 0.5},
    **{
        name: {"width": 0.125, "small_input": True, "dropout": 0.5}
        for name in (
            "vgg11",
            "vgg11_bn",
            "vgg13",
            "vgg13_bn",
            "vgg16",
            "vgg16_bn",
            "vgg19",
            "vgg19_bn",
        )
    },
    "resnet18": {"width": 0.125, "small_input": True},
    "resnet34": {"width": 0.125, "small_input": True},
    "resnet50": {"width": 0.0625, "small_input": True},
    "resnet101": {"width": 0.0625, "small_input": True},
    "resnet152": {"width": 0.0625, "small_input": True},
}


def build_small(name: str) -> nn.Module:
    torch.manual_seed(0)
    builder = getattr(arch, name)
    return builder(num_classes=NUM_CLASSES, in_channels=1, input_size=(32, 32), **SMALL[name])


def test_every_builder_is_covered():
    exported = {n for n in arch.__all__ if n[0].islower()}
    assert exported == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_shape(name):
    model = build_small(name).eval()
    with torch.no_grad():
        for n in (1, 3):
            logits = model(torch.randn(n, 1, 32, 32))
            assert logits.shape == (n, NUM_CLASSES)
            assert logits.dtype == torch.float32
            assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_one_sgd_step_lowers_the_loss(name):
    """One SGD step along -grad on a fixed batch lowers the cross-entropy (train mode).

    The step has a fixed length of 1e-4 in parameter space (lr = 1e-4 / |grad|): deep narrow
    ResNets without zero-init have gradient norms in the hundreds and a sharp loss surface, so a
    fixed lr would overshoot for them while barely moving an MLP. In float64 the first-order
    decrease (1e-4 * |grad|) stands far above rounding (measured: 0.73 to 1.0 of it across
    the builders), and re-seeding before each forward gives
    both evaluations the same dropout masks, so the test is deterministic.
    """
    model = build_small(name).double().train()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 1, 32, 32, generator=gen, dtype=torch.float64)
    y = torch.randint(0, NUM_CLASSES, (8,), generator=gen)

    def loss() -> torch.Tensor:
        torch.manual_seed(2)
        return nn.functional.cross_entropy(model(x), y)

    before = loss()
    before.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) == len(list(model.parameters())), "some parameter gets no gradient"
    grad_norm = float(torch.sqrt(sum((g * g).sum() for g in grads)))
    assert grad_norm > 0
    step = 1e-4
    torch.optim.SGD(model.parameters(), lr=step / grad_norm).step()
    with torch.no_grad():
        after = loss()
    # First order predicts a decrease of step * |grad|; ask for a quarter of it (Armijo-style).
    assert before.item() - after.item() > 0.25 * step * grad_norm


@pytest.mark.parametrize("name", sorted(SMALL))
def test_rebuilds_from_json_model_args(name):
    """model_args survive a JSON round trip and rebuild a model whose state_dict loads strictly."""
    model = build_small(name)
    args = json.loads(
        json.dumps(
            {"num_classes": NUM_CLASSES, "in_channels": 1, "input_size": [32, 32], **SMALL[name]}
        )
    )
    rebuilt = getattr(arch, name)(**args)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def _paper_size(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return getattr(arch, name)(num_classes=1000, in_channels=3, **kwargs)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        # torchvision's published counts (torchvision.models weights metadata, "num_params")
        ("resnet18", {}, 11_689_512),
        ("resnet34", {}, 21_797_672),
        ("resnet50", {}, 25_557_032),
        ("resnet101", {}, 44_549_160),
        ("resnet152", {}, 60_192_808),
        ("vgg11", {"input_size": (224, 224)}, 132_863_336),
        ("vgg16", {"input_size": (224, 224)}, 138_357_544),
        ("vgg16_bn", {"input_size": (224, 224)}, 138_365_992),
        ("vgg19", {"input_size": (224, 224)}, 143_667_240),
    ],
)
def test_parameter_count_at_paper_size(name, kwargs, expected):
    assert _count(_paper_size(name, **kwargs)) == expected


def test_alexnet_parameter_count_single_tower():
    """Paper widths, every conv seeing all channels (no two-GPU split), 1000 classes."""
    convs = [(3, 96, 11), (96, 256, 5), (256, 384, 3), (384, 384, 3), (384, 256, 3)]
    fcs = [(256 * 6 * 6, 4096), (4096, 4096), (4096, 1000)]
    expected = sum(i * o * k * k + o for i, o, k in convs) + sum(i * o + o for i, o in fcs)
    assert expected == 62_378_344
    assert _count(_paper_size("alexnet", input_size=(224, 224))) == expected


def test_alexnet_uses_the_papers_lrn():
    from training.architectures.alexnet import LocalResponseNorm

    features = arch.alexnet(width=0.125, small_input=True).features
    lrns = [m for m in features if isinstance(m, LocalResponseNorm)]
    assert len(lrns) == 2
    for m in lrns:
        # the paper: b = a / (k + alpha * sum of a^2 over n neighbouring channels)^beta
        assert (m.size, m.k, m.beta, m.alpha) == (5, 2.0, 0.75, 1e-4)
    # the same function as torch's module, which averages the squares (alpha * n), edges included
    torch.manual_seed(0)
    for channels in (1, 3, 12, 96):
        x = torch.rand(2, channels, 7, 5) * 30  # large enough for the normalization to matter
        ours = LocalResponseNorm(channels)(x)
        theirs = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(x)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(ours, x / 2.0**0.75), "the neighbours count"
    # no weights of its own: checkpoints are unchanged
    assert all("window" not in k for k in arch.alexnet(width=0.125, small_input=True).state_dict())


def test_lenet5_parameter_count():
    """C1 6*(25+1), C3 16*(6*25+1) (full S2-C3 connections), C5 120*(16*25+1), F6 84*(120+1),
    output 10*(84+1)."""
    assert _count(arch.lenet5()) == 156 + 2_416 + 48_120 + 10_164 + 850


def test_resnet18_uses_torchvision_names():
    keys = set(_paper_size("resnet18").state_dict())
    expected = {
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer1.0.bn1.weight",
        "layer1.0.conv2.weight",
        "layer1.1.bn2.bias",
        "layer4.1.bn2.running_var",
        "fc.weight",
        "fc.bias",
    }
    for stage in (2, 3, 4):
        down = f"layer{stage}.0.downsample"
        expected |= {
            f"{down}.0.weight",
            f"{down}.1.weight",
            f"{down}.1.bias",
            f"{down}.1.running_mean",
            f"{down}.1.running_var",
            f"{down}.1.num_batches_tracked",
        }
    assert expected <= keys
    assert not any(k.startswith("layer1.0.downsample") for k in keys)
    assert len(keys) == 122  # torchvision resnet18's state_dict has 122 entries


def test_resnet50_bottleneck_names():
    keys = set(_paper_size("resnet50").state_dict())
    assert {
        "layer1.0.conv3.weight",
        "layer1.0.bn3.running_mean",
        "layer1.0.downsample.0.weight",
        "layer4.2.bn3.weight",
        "fc.weight",
    } <= keys


def test_vgg16_uses_torchvision_names():
    keys = set(_paper_size("vgg16", input_size=(224, 224)).state_dict())
    assert {
        "features.0.weight",
        "features.28.weight",
        "classifier.0.weight",
        "classifier.3.weight",
        "classifier.6.bias",
    } <= keys


def test_vgg_small_input_head():
    model = arch.vgg11(width=0.25, small_input=True)
    assert model.avgpool.output_size == (1, 1)
    assert model.classifier[0].in_features == 128 and model.classifier[0].out_features == 128


@pytest.mark.parametrize("name", ["vgg11_bn", "lenet5", "alexnet"])
def test_28x28_input(name):
    kwargs = {k: v for k, v in SMALL[name].items()}
    model = getattr(arch, name)(num_classes=10, in_channels=1, input_size=(28, 28), **kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_resnet_full_stem_on_32x32():
    model = arch.resnet18(width=0.125).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_vgg_full_head_on_32x32():
    model = arch.vgg11(width=0.0625).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_input_checks():
    with pytest.raises(ValueError, match="relu"):
        arch.mlp(activation="gelu")
    with pytest.raises(ValueError, match="small_input"):
        arch.alexnet(input_size=(32, 32), small_input=False)
    with pytest.raises(ValueError, match="16x16"):
        arch.lenet5(input_size=(12, 12))
    with pytest.raises(TypeError):
        arch.resnet18(dropout=0.5)  # an unknown kwarg is an error, not silently ignored
