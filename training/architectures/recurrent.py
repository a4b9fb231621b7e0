"""Character-level recurrent language models: Elman RNN, LSTM and GRU, one class over the cell.

- RNN: Elman, "Finding structure in time", Cognitive Science 14, 1990 (``tanh`` units).
- LSTM: Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation 9(8), 1997, with the
  forget gate of Gers, Schmidhuber & Cummins 2000 (as in ``nn.LSTM``).
- GRU: Cho et al., "Learning phrase representations using RNN encoder-decoder for statistical
  machine translation", EMNLP 2014.

The model is the character language model of Graves, "Generating sequences with recurrent neural
networks" (2013) and Karpathy's char-rnn: embedding -> stacked recurrent layers -> linear to the
vocabulary, with dropout (Zaremba, Sutskever & Vinyals 2014: on the non-recurrent connections only,
i.e. after the embedding, between layers and before the output layer). As in pytorch/examples'
``word_language_model``, the cell is a string: ``getattr(nn, cell.upper())``.

State layout, everywhere outside this module (checkpoint-free serving, the exported ``step``
graph): one float32 tensor ``(batch, layers * k, hidden)`` with ``k = 1`` for RNN and GRU
(``state[:, l]`` is layer ``l``'s hidden state) and ``k = 2`` for LSTM (``state[:, :layers]`` are
the hidden states h, ``state[:, layers:]`` the cell states c). Batch comes first so that a server
can stack and split the states of independent streams along axis 0. The initial state is all
zeros.
"""

from __future__ import annotations

import torch
from torch import nn

CELLS = ("rnn", "lstm", "gru")


class CharRNN(nn.Module):
    """Embedding, ``layers`` recurrent layers of ``hidden`` units, linear output over the
    vocabulary.

    Args:
        vocab_size: number of tokens (characters plus ``<unk>``).
        embed: embedding width.
        hidden: units per recurrent layer.
        layers: stacked recurrent layers.
        dropout: on the embedding, between layers and before the output layer (train mode only).
        cell: ``"rnn"`` (Elman, tanh), ``"lstm"`` or ``"gru"``.
    """

    def __init__(
        self,
        vocab_size: int,
        embed: int = 64,
        hidden: int = 256,
        layers: int = 2,
        dropout: float = 0.2,
        cell: str = "lstm",
    ) -> None:
        super().__init__()
        if cell.lower() not in CELLS:
            raise ValueError(f"cell {cell!r}: allowed {', '.join(CELLS)}")
        self.cell, self.layers, self.hidden = cell.lower(), layers, hidden
        self.state_factor = 2 if self.cell == "lstm" else 1
        self.embedding = nn.Embedding(vocab_size, embed)
        self.drop = nn.Dropout(dropout)
        self.rnn = getattr(nn, self.cell.upper())(
            embed,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.decoder = nn.Linear(hidden, vocab_size)

    def init_state(self, batch: int) -> torch.Tensor:
        """The zero state, packed: (batch, layers * k, hidden)."""
        return self.decoder.weight.new_zeros(batch, self.layers * self.state_factor, self.hidden)

    def _unpack(self, state: torch.Tensor):
        s = state.transpose(0, 1).contiguous()  # (layers * k, B, H)
        if self.cell == "lstm":
            return s[: self.layers], s[self.layers :]  # h, c: (layers, B, H) each
        return s

    def _pack(self, state) -> torch.Tensor:
        if self.cell == "lstm":
            state = torch.cat(state, dim=0)  # (2 * layers, B, H)
        return state.transpose(0, 1).contiguous()  # (B, layers * k, H)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None):
        """tokens (B, T) int64, state (B, layers * k, H) or None -> logits (B, T, V), state."""
        if state is None:
            state = self.init_state(tokens.shape[0])
        x = self.drop(self.embedding(tokens))  # (B, T, E)
        out, new_state = self.rnn(x, self._unpack(state))  # (B, T, H)
        logits = self.decoder(self.drop(out))  # (B, T, V)
        return logits, self._pack(new_state)


class CharRNNStep(nn.Module):
    """The serving half: one step with explicit state, exported as the ``step`` graph."""

    def __init__(self, model: CharRNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, state: torch.Tensor):
        """tokens (B,) int64, state (B, layers * k, H) -> logits (B, V),
        state (B, layers * k, H)."""
        logits, state = self.model(tokens.unsqueeze(1), state)  # (B, 1, V)
        return logits[:, 0], state


def _char_rnn(
    cell: str, vocab_size: int, embed: int, hidden: int, layers: int, dropout: float
) -> CharRNN:
    return CharRNN(
        vocab_size, embed=embed, hidden=hidden, layers=layers, dropout=dropout, cell=cell
    )


def rnn(
    vocab_size: int, embed: int = 64, hidden: int = 256, layers: int = 2, dropout: float = 0.2
) -> CharRNN:
    """Character language model over Elman (tanh) RNN layers."""
    return _char_rnn("rnn", vocab_size, embed, hidden, layers, dropout)


def lstm(
    vocab_size: int, embed: int = 64, hidden: int = 256, layers: int = 2, dropout: float = 0.2
) -> CharRNN:
    """Character language model over LSTM layers."""
    return _char_rnn("lstm", vocab_size, embed, hidden, layers, dropout)


def gru(
    vocab_size: int, embed: int = 64, hidden: int = 256, layers: int = 2, dropout: float = 0.2
) -> CharRNN:
    """Character language model over GRU layers."""
    return _char_rnn("gru", vocab_size, embed, hidden, layers, dropout)
