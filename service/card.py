"""The model card: the one contract between training and serving.

Training writes ``models/<name>/<version>/card.json`` with :meth:`Card.to_json`; the service
reads it with :func:`load_card`. This module imports neither torch nor bentoml, so both sides can
import it. Everything the service needs to run a model is here; the service hard-codes nothing about
any particular model.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA = "dlzoo.card/1"
CARD_FILE = "card.json"

# ``tensor``: an imported graph served as it is, with its own tensors (no preprocessing, no labels).
Task = Literal["classify", "language_model", "seq2seq", "vae", "gan", "tensor"]
DType = Literal["float32", "float16", "int64", "int32", "bool"]
# How an upload is brought to the graph's size (:class:`Preprocess`).
Resize = Literal["frame", "crop", "stretch"]
# What a classifier's first output holds: scores to softmax, or probabilities already.
OutputKind = Literal["logits", "probabilities"]
# A graph dimension with neither a fixed size nor a name (ONNX allows it): symbolic, unnamed.
UNNAMED_DIM = "?"

# The graphs each task must ship (card.files keys). The service relies on exactly these roles.
REQUIRED_ROLES: dict[str, tuple[str, ...]] = {
    "classify": ("model",),
    "language_model": ("step",),
    "seq2seq": ("encoder", "decoder_step"),
    "vae": ("encoder", "decoder"),
    "gan": ("generator",),
    "tensor": ("model",),
}

NAME_PATTERN = r"^[a-z][a-z0-9_\-]{0,63}$"
# how a request names a model: ``name`` or ``name@version`` (the OpenAPI document shows it)
MODEL_REF_PATTERN = r"^[a-z][a-z0-9_\-]{0,63}(@0*[1-9][0-9]*)?$"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One graph input or output; a string in ``shape`` is a symbolic axis (``"batch"``)."""

    name: str
    dtype: DType
    shape: list[int | str]


class GraphIO(_Strict):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class GraphFile(_Strict):
    path: str
    sha256: str

    @field_validator("path")
    @classmethod
    def _plain_file_name(cls, v: str) -> str:
        # A card must not point outside its own folder.
        if not v or "/" in v or "\\" in v or v.startswith("."):
            raise ValueError(f"file path must be a plain file name in the card's folder, got {v!r}")
        return v

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, v: str) -> str:
        if not _SHA256.match(v):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return v


class Parity(_Strict):
    """ONNX Runtime vs PyTorch, measured at export on fresh random inputs."""

    max_abs_diff: float
    tolerance: float
    batch_sizes: list[int]


class Framing(_Strict):
    """How the object sits in the dataset's images.

    ``bbox``: the object's bounding box is scaled so that its longer side is ``fill`` times the
    frame's side, then placed so that its ``center`` (box centre, or centre of mass) is the frame's
    centre. ``none``: the whole picture is the input (photos), resized to the frame.
    """

    mode: Literal["none", "bbox"]
    fill: float = Field(default=1.0, gt=0.0, le=1.0)
    center: Literal["bbox", "mass"] = "bbox"


class Preprocess(_Strict):
    """The dataset's canonical image form, so that serving can bring any upload to it.

    The service turns an upload into a float32 array in [0, 1] of ``channels`` x ``size``:
    composite alpha over ``background``, convert to ``channels`` (luma for one), then ``resize``:

    - ``frame`` (the default; the zoo's own models): bring the object to ``ink`` polarity
      (``light``: light object on a dark background, as in digits/MNIST), frame it as ``framing``
      says at ``native_size`` (the resolution the dataset was captured at), stretch the contrast to
      [0, 1] if ``stretch_contrast``, then resize to ``size``.
    - ``crop`` (ImageNet's convention): scale, keeping the aspect ratio, until the picture covers
      ``size`` x 256/224 (a square ``size``: the shorter side to 256 for 224), then cut ``size``
      from the centre.
    - ``stretch``: resize straight to ``size``, whatever the aspect ratio.

    Resizing is bilinear, antialiased when shrinking. ``mean``/``std`` are applied by the service
    only when ``normalization_in_graph`` is false.
    """

    size: tuple[int, int]  # (height, width) of the graph's input
    channels: Literal[1, 3]
    resize: Resize = "frame"
    native_size: tuple[int, int] | None = None
    ink: Literal["light", "dark"] | None = None
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    framing: Framing = Framing(mode="none")
    stretch_contrast: bool = False
    mean: list[float]
    std: list[float]
    normalization_in_graph: bool = True

    @model_validator(mode="after")
    def _per_channel(self) -> Preprocess:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one value per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        if self.resize != "frame":
            framed = {
                "ink": self.ink is not None,
                "native_size": self.native_size is not None,
                "framing": self.framing.mode != "none",
                "stretch_contrast": self.stretch_contrast,
            }
            if any(framed.values()):
                used = ", ".join(k for k, v in framed.items() if v)
                raise ValueError(f"{used}: only for resize 'frame', not {self.resize!r}")
        return self


class Origin(_Strict):
    """Where an imported model came from (models trained here have none)."""

    kind: Literal["onnx", "torchvision"]
    file: str  # the imported file's name
    sha256: str = Field(pattern=_SHA256.pattern)
    producer: str | None = None  # ONNX: the graph's producer name and version
    opset: int | None = None  # ONNX: the default domain's opset
    ir_version: int | None = None


class ImageSpec(_Strict):
    """An image a generative graph produces: values in [0, 1], ``channels`` x ``size``."""

    size: tuple[int, int]
    channels: Literal[1, 3]
    ink: Literal["light", "dark"] | None = None


class Vocabulary(_Strict):
    """Token ids are list positions; special tokens are named by id."""

    tokens: list[str]
    special: dict[str, int] = {}

    @model_validator(mode="after")
    def _ids_in_range(self) -> Vocabulary:
        for name, idx in self.special.items():
            if not 0 <= idx < len(self.tokens):
                raise ValueError(f"special token {name!r} id {idx} is outside the vocabulary")
        return self


class DatasetInfo(_Strict):
    name: str
    source: str
    splits: dict[str, int]


class Card(_Strict):
    schema_: Literal["dlzoo.card/1"] = Field(default=SCHEMA, alias="schema")
    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    architecture: str
    task: Task
    created: str
    git_commit: str | None = None
    dataset: DatasetInfo
    training: dict[str, Any]
    metrics: dict[str, Any]
    files: dict[str, GraphFile]
    io: dict[str, GraphIO]
    parity: dict[str, Parity]
    # task specifics
    preprocess: Preprocess | None = None
    labels: list[str] | None = None
    vocab: Vocabulary | None = None
    latent_dim: int | None = Field(default=None, ge=1)
    image: ImageSpec | None = None
    output: OutputKind | None = None  # classifiers; None is "logits" (every card before imports)
    origin: Origin | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> Card:
        required = REQUIRED_ROLES[self.task]
        missing = [r for r in required if r not in self.files]
        if missing:
            raise ValueError(f"task {self.task!r} needs files {list(required)}; missing {missing}")
        if set(self.io) != set(self.files):
            raise ValueError("io must describe exactly the graphs listed in files")
        if set(self.parity) != set(self.files):
            raise ValueError("parity must be recorded for every graph listed in files")
        for role, p in self.parity.items():
            if not p.max_abs_diff <= p.tolerance:
                raise ValueError(f"{role}: parity {p.max_abs_diff} exceeds tolerance {p.tolerance}")
        if self.task == "classify":
            if self.preprocess is None or not self.labels:
                raise ValueError("a classifier card needs preprocess and labels")
            out = self.io["model"].outputs[0].shape
            if isinstance(out[-1], int) and out[-1] != len(self.labels):
                raise ValueError(f"{len(self.labels)} labels for {out[-1]} graph outputs")
        elif self.output is not None:
            raise ValueError("output (logits or probabilities) is for classifiers only")
        if self.task == "tensor" and (self.preprocess is not None or self.labels is not None):
            raise ValueError("a tensor card has no preprocess and no labels: its graph's io is all")
        if self.task in ("language_model", "seq2seq") and self.vocab is None:
            raise ValueError(f"a {self.task} card needs vocab")
        if self.task in ("vae", "gan") and (self.latent_dim is None or self.image is None):
            raise ValueError(f"a {self.task} card needs latent_dim and image")
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def output_kind(self) -> OutputKind:
        """What a classifier's first output holds (cards written before ``output`` say logits)."""
        return self.output or "logits"

    def to_json(self) -> str:
        return (
            json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=False)
            + "\n"
        )


def load_card(path: str | Path) -> Card:
    """Parse and validate a card.json; ``ValueError`` (pydantic's included) names the file."""
    path = Path(path)
    try:
        return Card.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def versions(models_root: str | Path, name: str) -> list[int]:
    """The versions of ``name`` in a model repository (``<name>/<digits>`` folders), ascending."""
    folder = Path(models_root) / name
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """``"lenet5"`` -> ("lenet5", None); ``"lenet5@2"`` -> ("lenet5", 2). Raises ValueError."""
    name, sep, version = ref.partition("@")
    if not re.match(NAME_PATTERN, name):
        raise ValueError(f"model name {name!r} is not a valid model name")
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise ValueError(f"model version in {ref!r} must be a positive integer")
    return name, int(version)


ZOO_FILE = ".zoo.json"  # in the repository root while a zoo run publishes models


class ZooProgress(_Strict):
    """What a running zoo has yet to publish, for ``/models`` (training writes it, the service
    reads it; a dot file, so never taken for a model)."""

    profile: str
    pending: list[str]  # names not yet published, the one in training first
