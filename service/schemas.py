"""Request bodies and their limits: one definition each, used by the endpoints and the OpenAPI.

A JSON body is a pydantic model whose unknown fields are a 400 (a misspelt option is never
silently ignored). Number fields carry their range in the schema (minimum/maximum) and in the 400,
which names the whole range, not only the bound that failed.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

from service.card import MODEL_REF_PATTERN

SEED_LIMIT = 2**32  # seeds are 0 <= seed < SEED_LIMIT (a JSON number any client keeps exactly)
# language models
MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS = 2000
MAX_TEMPERATURE = 5.0
MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 64
MAX_ALTERNATIVES = 10
# seq2seq
MAX_TRANSLATE_CHARS = 200
MAX_BEAM_WIDTH = 16
# VAE and GAN pictures
MAX_COUNT = 64
MAX_STEPS = 32
MAX_SCALE = 8
MAX_COLUMNS = 64


def draw_seed() -> int:
    """A fresh seed for a request that gave none (returned so the client can repeat it)."""
    return secrets.randbelow(SEED_LIMIT)


def _range(kind: type, noun: str, low, high, description: str):
    def check(value, handler):
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError(
                "range",
                "must be {noun} from {low} to {high}, got {value}",
                {"noun": noun, "low": low, "high": high, "value": value},
            ) from None

    field = Field(ge=low, le=high, description=description, strict=True)
    return Annotated[kind, field, WrapValidator(check)]


def IntRange(low: int, high: int, description: str):
    return _range(int, "an integer", low, high, description)


def FloatRange(low: float, high: float, description: str):
    return _range(float, "a number", low, high, description)


Seed = IntRange(0, SEED_LIMIT - 1, "fixes the randomness; drawn (and returned) if absent")
Scale = IntRange(1, MAX_SCALE, "nearest-neighbour enlargement")
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


def ModelRef(description: str, default: str | None = None):
    """A request's model field: ``name`` or ``name@version``. The catalog checks the pattern (its
    400 lists the models available); the schema shows it. No ``default`` inside ``Annotated``."""
    extra = {"description": description, "json_schema_extra": {"pattern": MODEL_REF_PATTERN}}
    return Field(**extra) if default is None else Field(default, **extra)


class _Body(BaseModel):
    # a misspelt option is a 400, not silently ignored; a value of the wrong JSON type too
    model_config = ConfigDict(extra="forbid", strict=True)


class GenerateRequest(_Body):
    """The body of /generate and /generate_stream (one definition for both)."""

    model: str = ModelRef("a language model (rnn, lstm, gru), or name@version", "lstm")
    prompt: str = Field(
        "",
        max_length=MAX_PROMPT_CHARS,
        description="text to continue; characters outside the vocabulary are read as "
        "unknown and listed in unknown_chars; empty starts a new paragraph",
    )
    max_new_tokens: IntRange(1, MAX_NEW_TOKENS, "characters to generate at most") = 200
    temperature: FloatRange(0.0, MAX_TEMPERATURE, "0 = greedy; higher = more random") = 0.8
    top_k: (
        IntRange(1, 1_000_000, "sample among the k most likely (at most the vocabulary size)")
        | None
    ) = None
    top_p: FloatRange(
        0.0, 1.0, "sample among the most likely tokens whose probability reaches p"
    ) = 1.0
    seed: Seed | None = None
    stop: list[StopString] = Field(
        [],
        max_length=MAX_STOP_STRINGS,
        description="end where one of these first appears (not included)",
    )
    alternatives: IntRange(
        0,
        MAX_ALTERNATIVES,
        "with each token, this many most likely characters and their probabilities under the "
        "model (softmax of the raw logits), best first; 0 = none",
    ) = 0


class SampleRequest(_Body):
    model: str = ModelRef("a vae or gan model, or name@version", "gan")
    count: IntRange(1, MAX_COUNT, "how many images") = 16
    seed: Seed | None = None
    format: Literal["png", "json"] = Field("png", description="png grid, or json arrays")
    columns: IntRange(1, MAX_COLUMNS, "grid columns (default: a square grid)") | None = None
    scale: Scale = 1


class InterpolateRequest(_Body):
    model: str = ModelRef("a vae or gan model, or name@version", "gan")
    seed_from: (
        IntRange(0, SEED_LIMIT - 1, "start: the first latent of this seed (drawn if absent)") | None
    ) = None
    seed_to: IntRange(0, SEED_LIMIT - 1, "end (drawn if absent)") | None = None
    steps: IntRange(2, MAX_STEPS, "frames, endpoints included") = 8
    method: Literal["lerp", "slerp"] = Field("slerp", description="straight line, or great circle")
    format: Literal["png", "json"] = Field("png", description="png strip, or json arrays")
    scale: Scale = 1


class TranslateRequest(_Body):
    model: str = ModelRef("a seq2seq model, or name@version", "seq2seq")
    text: str = Field(
        ...,
        min_length=1,
        max_length=MAX_TRANSLATE_CHARS,
        description="the source text (the model's card may allow fewer characters)",
    )
    beam_width: IntRange(1, MAX_BEAM_WIDTH, "1 = greedy") = 4
    num_return: IntRange(1, MAX_BEAM_WIDTH, "candidates to return, at most beam_width") | None = (
        None
    )
    max_length: (
        IntRange(1, 1000, "output tokens at most (default: the card's max_target_len)") | None
    ) = None
    attention: bool = Field(
        False,
        description="with each candidate, the decoder's attention weights: one row per output "
        "token (<eos> included) over the source characters",
    )
