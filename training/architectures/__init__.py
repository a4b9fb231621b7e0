"""Image classifier architectures, one family per file.

Every builder has the same signature, so the registry can rebuild a model from the ``model_args``
stored in a checkpoint::

    builder(num_classes=10, in_channels=1, input_size=(32, 32), **family_kwargs) -> nn.Module

mapping float32 ``(N, in_channels, H, W)`` to logits ``(N, num_classes)``. Family kwargs are plain
JSON values (``width``, ``small_input``, ``dropout``, ``hidden``, ...); an unknown one raises
``TypeError``.

The sequence and generative families (``recurrent``, ``seq2seq``, ``vae``, ``gan``) take their own
JSON kwargs (``vocab_size``, ``latent_dim``, ...) and document their inputs in their modules.
They are importable from here by name; ``__all__`` lists the image classifiers only (their tests
check that every builder in it is covered with the classifier signature).
"""

from training.architectures.alexnet import AlexNet, alexnet
from training.architectures.gan import DCGAN, Discriminator, Generator, ImageGenerator, dcgan
from training.architectures.lenet import LeNet5, lenet5
from training.architectures.mlp import MLP, mlp
from training.architectures.recurrent import CharRNN, CharRNNStep, gru, lstm, rnn
from training.architectures.resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)
from training.architectures.seq2seq import Seq2Seq, Seq2SeqDecoderStep, Seq2SeqEncoder, seq2seq
from training.architectures.vae import VAE, VAEDecoder, VAEEncoder, vae
from training.architectures.vgg import (
    VGG,
    vgg11,
    vgg11_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg19,
    vgg19_bn,
)

__all__ = [
    "MLP",
    "mlp",
    "LeNet5",
    "lenet5",
    "AlexNet",
    "alexnet",
    "VGG",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]
