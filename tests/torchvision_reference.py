"""torchvision's classifiers without torchvision or dlzoo: state dicts in torchvision's layout
(key names and shapes as its model code builds them, random weights and batch-norm statistics) and
reference forwards written with ``torch.nn.functional`` straight on those tensors, in float64.

Written from torchvision 0.29's ``models/resnet.py``, ``vgg.py`` and ``alexnet.py`` (read, not
imported: its wheels need the CUDA build of torch). The strides, paddings and layer order here are
the check on dlzoo's architectures, so nothing here may come from training/.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESNETS = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]),
}
# VGG's configurations A, B, D, E (11, 13, 16, 19 weight layers): conv widths, "M" a max pool
_A = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
_B = [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
_D = _B[:8] + [256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_E = _B[:8] + [256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
VGGS = {
    f"vgg{n}{bn}": cfg for n, cfg in ((11, _A), (13, _B), (16, _D), (19, _E)) for bn in ("", "_bn")
}
# (name, out, in, kernel, stride, padding) of AlexNet's convs, by features index ("One weird trick")
ALEXNET_CONVS = [(0, 64, 3, 11, 4, 2), (3, 192, 64, 5, 1, 2), (6, 384, 192, 3, 1, 1)]
ALEXNET_CONVS += [(8, 256, 384, 3, 1, 1), (10, 256, 256, 3, 1, 1)]
ALEXNET_POOL_AFTER = (0, 3, 10)


class Weights:
    """Fills a state dict in order from one seeded generator (``meta``: shapes only, no data)."""

    def __init__(self, seed: int, meta: bool = False):
        self.g = torch.Generator().manual_seed(seed)
        self.meta = meta
        self.sd: dict[str, torch.Tensor] = {}

    def randn(self, *shape: int) -> torch.Tensor:
        if self.meta:
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=self.g)

    def rand(self, *shape: int) -> torch.Tensor:
        return self.randn(*shape) if self.meta else torch.rand(*shape, generator=self.g)

    def conv(self, key: str, out: int, inp: int, k: int, bias: bool = False) -> None:
        self.sd[f"{key}.weight"] = self.randn(out, inp, k, k) * math.sqrt(2.0 / (inp * k * k))
        if bias:
            self.sd[f"{key}.bias"] = self.randn(out) * 0.1

    def bn(self, key: str, c: int) -> None:
        # running statistics far from 0 and 1, so that a model that ignored them would differ
        self.sd[f"{key}.weight"] = 0.5 + self.rand(c)
        self.sd[f"{key}.bias"] = self.randn(c) * 0.1
        self.sd[f"{key}.running_mean"] = self.randn(c) * 0.2
        self.sd[f"{key}.running_var"] = 0.5 + 1.5 * self.rand(c)
        self.sd[f"{key}.num_batches_tracked"] = torch.tensor(0)

    def linear(self, key: str, out: int, inp: int) -> None:
        self.sd[f"{key}.weight"] = self.randn(out, inp) / math.sqrt(inp)
        self.sd[f"{key}.bias"] = self.randn(out) * 0.1


def state_dict(
    arch: str, seed: int = 0, classes: int = 1000, meta: bool = False
) -> dict[str, torch.Tensor]:
    """torchvision's ``arch`` state dict with random values (``meta``: shapes only)."""
    w = Weights(seed, meta)
    if arch in RESNETS:
        block, layers = RESNETS[arch]
        expansion = 1 if block == "basic" else 4
        w.conv("conv1", 64, 3, 7)
        w.bn("bn1", 64)
        inplanes = 64
        for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), 1):
            for i in range(n):
                p, stride = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1
                if block == "basic":
                    w.conv(f"{p}.conv1", planes, inplanes, 3)
                    w.bn(f"{p}.bn1", planes)
                    w.conv(f"{p}.conv2", planes, planes, 3)
                    w.bn(f"{p}.bn2", planes)
                else:
                    w.conv(f"{p}.conv1", planes, inplanes, 1)
                    w.bn(f"{p}.bn1", planes)
                    w.conv(f"{p}.conv2", planes, planes, 3)
                    w.bn(f"{p}.bn2", planes)
                    w.conv(f"{p}.conv3", planes * 4, planes, 1)
                    w.bn(f"{p}.bn3", planes * 4)
                if stride != 1 or inplanes != planes * expansion:
                    w.conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
                    w.bn(f"{p}.downsample.1", planes * expansion)
                inplanes = planes * expansion
        w.linear("fc", classes, 512 * expansion)
    elif arch in VGGS:
        i, inp, bn = 0, 3, arch.endswith("_bn")
        for v in VGGS[arch]:
            if v == "M":
                i += 1
                continue
            w.conv(f"features.{i}", v, inp, 3, bias=True)
            if bn:
                w.bn(f"features.{i + 1}", v)
            i, inp = i + 2 + bn, v
        w.linear("classifier.0", 4096, 512 * 7 * 7)
        w.linear("classifier.3", 4096, 4096)
        w.linear("classifier.6", classes, 4096)
    elif arch == "alexnet":
        for i, out, inp, k, _, _ in ALEXNET_CONVS:
            w.conv(f"features.{i}", out, inp, k, bias=True)
        w.linear("classifier.1", 4096, 256 * 6 * 6)
        w.linear("classifier.4", 4096, 4096)
        w.linear("classifier.6", classes, 4096)
    else:
        raise ValueError(arch)
    return w.sd


def head(arch: str) -> str:
    """The last layer's key prefix: scaling it scales the logits."""
    return "fc" if arch.startswith("resnet") else "classifier.6"


def _bn(x: torch.Tensor, sd, key: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        sd[f"{key}.running_mean"],
        sd[f"{key}.running_var"],
        sd[f"{key}.weight"],
        sd[f"{key}.bias"],
        training=False,
        eps=1e-5,
    )


def _cb(x: torch.Tensor, sd, p: str, conv: str, bn: str, stride=1, padding=0) -> torch.Tensor:
    """Conv (no bias) then batch norm, keys under ``p``."""
    return _bn(
        F.conv2d(x, sd[f"{p}.{conv}.weight"], stride=stride, padding=padding), sd, f"{p}.{bn}"
    )


@torch.no_grad()
def forward(arch: str, sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits for normalized (N, 3, 224, 224) ``x``, all in float64."""
    sd = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
    x = x.double()
    if arch in RESNETS:
        block, layers = RESNETS[arch]
        x = F.relu(_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1"))  # stem
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        for stage, n in enumerate(layers, 1):
            for i in range(n):
                p, s = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1
                if block == "basic":
                    out = F.relu(_cb(x, sd, p, "conv1", "bn1", stride=s, padding=1))
                    out = _cb(out, sd, p, "conv2", "bn2", padding=1)
                else:  # the stride in the 3x3 conv ("ResNet v1.5")
                    out = F.relu(_cb(x, sd, p, "conv1", "bn1"))
                    out = F.relu(_cb(out, sd, p, "conv2", "bn2", stride=s, padding=1))
                    out = _cb(out, sd, p, "conv3", "bn3")
                if f"{p}.downsample.0.weight" in sd:
                    x = _cb(x, sd, p, "downsample.0", "downsample.1", stride=s)
                x = F.relu(out + x)
        return F.linear(x.mean(dim=(2, 3)), sd["fc.weight"], sd["fc.bias"])
    if arch in VGGS:
        i, bn = 0, arch.endswith("_bn")
        for v in VGGS[arch]:
            if v == "M":
                x, i = F.max_pool2d(x, 2, stride=2), i + 1
                continue
            x = F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1)
            x = _bn(x, sd, f"features.{i + 1}") if bn else x
            x, i = F.relu(x), i + 2 + bn
        x = torch.flatten(F.adaptive_avg_pool2d(x, 7), 1)
        for j in (0, 3):
            x = F.relu(F.linear(x, sd[f"classifier.{j}.weight"], sd[f"classifier.{j}.bias"]))
        return F.linear(x, sd["classifier.6.weight"], sd["classifier.6.bias"])
    if arch == "alexnet":
        for i, _, _, _, stride, padding in ALEXNET_CONVS:
            x = F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], stride, padding)
            x = F.relu(x)
            if i in ALEXNET_POOL_AFTER:
                x = F.max_pool2d(x, 3, stride=2)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 6), 1)
        for j in (1, 4):
            x = F.relu(F.linear(x, sd[f"classifier.{j}.weight"], sd[f"classifier.{j}.bias"]))
        return F.linear(x, sd["classifier.6.weight"], sd["classifier.6.bias"])
    raise ValueError(arch)
