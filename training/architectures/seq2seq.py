"""Encoder-decoder with additive attention.

Bahdanau, Cho & Bengio, "Neural machine translation by jointly learning to align and translate",
ICLR 2015 (RNNsearch):

- Encoder: a bidirectional recurrent layer over the embedded source; the annotation of source
  position j is ``h_j = [forward_j ; backward_j]`` (section 3.2).
- Initial decoder state: ``s_0 = tanh(W_s backward_1)``, from the backward layer's state at the
  first source position (appendix A.2.2).
- Alignment: ``e_tj = v^T tanh(W_a s_{t-1} + U_a h_j)``, ``alpha_t = softmax_j(e_tj)``,
  context ``c_t = sum_j alpha_tj h_j`` (section 3.1).
- Decoder: ``s_t = f(s_{t-1}, [E y_{t-1} ; c_t])`` with a GRU cell (the paper's gated unit), and a
  deep output ``p(y_t) = softmax(W_o tanh(L_s s_t + L_y E y_{t-1} + L_c c_t))``.

Departures: the deep output uses ``tanh`` where the paper used a maxout layer; the output reads
``s_t`` (the state after this step, as in Luong et al. 2015) rather than ``s_{t-1}``; source padding
is masked out of the alignment; ``cell="lstm"`` swaps both recurrent layers for LSTMs.

Padding: the source is right-padded to one fixed length, in training and in serving, because the
backward layer reads the padding before the text, so its annotations depend on how much padding it
saw (``pack_padded_sequence`` would avoid that but does not export). The mask is ``tokens != pad``.

Decoder state layout outside this module: ``(batch, k, hidden)``, ``k = 1`` for GRU, ``k = 2`` for
LSTM (h then c), batch first so streams stack along axis 0.
"""

from __future__ import annotations

import torch
from torch import nn

CELLS = ("gru", "lstm")


class BahdanauAttention(nn.Module):
    """Additive attention: ``v^T tanh(W_a s + U_a h_j)`` over the unmasked source positions."""

    def __init__(self, state_size: int, memory_size: int, attention: int) -> None:
        super().__init__()
        self.query = nn.Linear(state_size, attention, bias=False)  # W_a
        self.key = nn.Linear(memory_size, attention)  # U_a
        self.score = nn.Linear(attention, 1, bias=False)  # v

    def forward(self, state: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor):
        """state (B, H), memory (B, S, M), mask (B, S) bool -> context (B, M), weights (B, S)."""
        energy = torch.tanh(self.query(state).unsqueeze(1) + self.key(memory))  # (B, S, A)
        scores = self.score(energy).squeeze(2)  # (B, S)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)  # (B, S)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, M)
        return context, weights


class Seq2Seq(nn.Module):
    """RNNsearch over one shared vocabulary (source and target tokens share ids).

    Args:
        vocab_size: tokens, specials included.
        embed: embedding width (one embedding table for source and target).
        hidden: units of each encoder direction and of the decoder.
        attention: width of the alignment model's hidden layer.
        dropout: on embeddings and before the output layer (train mode only).
        cell: ``"gru"`` (the paper) or ``"lstm"``.
        pad: the padding token id (masked out of the alignment).
    """

    def __init__(
        self,
        vocab_size: int,
        embed: int = 64,
        hidden: int = 128,
        attention: int = 128,
        dropout: float = 0.1,
        cell: str = "gru",
        pad: int = 0,
    ) -> None:
        super().__init__()
        if cell.lower() not in CELLS:
            raise ValueError(f"cell {cell!r}: allowed {', '.join(CELLS)}")
        self.cell, self.hidden, self.pad = cell.lower(), hidden, pad
        self.state_factor = 2 if self.cell == "lstm" else 1
        rnn = getattr(nn, self.cell.upper())
        self.embedding = nn.Embedding(vocab_size, embed)
        self.drop = nn.Dropout(dropout)
        self.encoder = rnn(embed, hidden, batch_first=True, bidirectional=True)
        self.init_state = nn.Linear(hidden, hidden * self.state_factor)  # W_s
        self.attention = BahdanauAttention(hidden, 2 * hidden, attention)
        self.decoder = getattr(nn, self.cell.upper() + "Cell")(embed + 2 * hidden, hidden)
        self.out_state = nn.Linear(hidden, hidden)  # L_s
        self.out_embed = nn.Linear(embed, hidden, bias=False)  # L_y
        self.out_context = nn.Linear(2 * hidden, hidden, bias=False)  # L_c
        self.out = nn.Linear(hidden, vocab_size)  # W_o

    def encode(self, tokens: torch.Tensor):
        """tokens (B, S) -> memory (B, S, 2H), mask (B, S) bool, initial state (B, k, H)."""
        mask = tokens != self.pad  # (B, S)
        x = self.drop(self.embedding(tokens))  # (B, S, E)
        memory, _ = self.encoder(x)  # (B, S, 2H): [forward ; backward] per position
        backward_first = memory[:, 0, self.hidden :]  # (B, H): the backward layer after reading all
        state = torch.tanh(self.init_state(backward_first))  # (B, k * H)
        return memory, mask, state.view(-1, self.state_factor, self.hidden)  # (B, k, H)

    def step(
        self, tokens: torch.Tensor, state: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ):
        """One decoder step: previous tokens (B,), state (B, k, H), memory (B, S, 2H), mask (B, S)
        -> logits (B, V), next state (B, k, H), attention weights (B, S)."""
        y = self.drop(self.embedding(tokens))  # (B, E)
        s = state[:, 0]  # (B, H): the hidden state (LSTM: h)
        context, weights = self.attention(s, memory, mask)  # (B, 2H), (B, S)
        rnn_in = torch.cat([y, context], dim=1)  # (B, E + 2H)
        if self.cell == "lstm":
            h, c = self.decoder(rnn_in, (s, state[:, 1]))  # (B, H) each
            next_state = torch.stack([h, c], dim=1)  # (B, 2, H)
        else:
            h = self.decoder(rnn_in, s)  # (B, H)
            next_state = h.unsqueeze(1)  # (B, 1, H)
        deep = torch.tanh(
            self.out_state(h) + self.out_embed(y) + self.out_context(context)
        )  # (B, H)
        return self.out(self.drop(deep)), next_state, weights  # (B, V), (B, k, H), (B, S)

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: source (B, S), decoder inputs (B, T) -> logits (B, T, V)."""
        memory, mask, state = self.encode(source)
        logits = []
        for t in range(target_in.shape[1]):
            step_logits, state, _ = self.step(target_in[:, t], state, memory, mask)  # (B, V)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)  # (B, T, V)


class Seq2SeqEncoder(nn.Module):
    """Serving half: the ``encoder`` graph (tokens -> memory, mask, state)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor):
        return self.model.encode(tokens)  # (B, S, 2H), (B, S) bool, (B, k, H)


class Seq2SeqDecoderStep(nn.Module):
    """Serving half: the ``decoder_step`` graph (one step with explicit state)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, tokens: torch.Tensor, state: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ):
        return self.model.step(tokens, state, memory, mask)  # (B, V), (B, k, H), (B, S)


def seq2seq(
    vocab_size: int,
    embed: int = 64,
    hidden: int = 128,
    attention: int = 128,
    dropout: float = 0.1,
    cell: str = "gru",
    pad: int = 0,
) -> Seq2Seq:
    """RNNsearch (Bahdanau et al. 2015): bidirectional encoder, attention decoder."""
    return Seq2Seq(
        vocab_size,
        embed=embed,
        hidden=hidden,
        attention=attention,
        dropout=dropout,
        cell=cell,
        pad=pad,
    )
