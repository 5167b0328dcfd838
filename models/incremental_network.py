"""The incremental Transformer+LSTM: per-event encoder cost independent of history length.

The window model (``models.network``) re-encodes a card's whole window for every
event, because its attention is bidirectional: a new event changes every position's
output. Here attention is *local and causal*: at each layer an event attends to itself
and the ``band - 1`` events before it, so after ``n_layers`` layers an event's output
depends on the last ``context = n_layers · (band - 1) + 1`` events and nothing older.
The LSTM then carries the card's long-range state, one step per event. So a card's
state is the LSTM's ``(h, c)``, and adding an event costs one pass over ``context``
tokens and one LSTM step, whatever the history length (``step``).

Before a card's first event the context is filled with a learned ``[START]`` token (no
attention mask is needed for missing events, so no attention row is ever empty: a
fully masked row gives NaN in torch and different values in ONNX Runtime, DESIGN §8).
No positional encoding: order comes from the band and the LSTM, recency from the time
features. ``sequence`` (training) and ``step`` (serving) compute the same function;
``tests/models/test_incremental_network.py`` proves it, to float precision.

Each event's inputs are its own step features as the current event (``cur_*`` of
``features.featurize``), computed once when it is scored: the serving path never
re-featurizes the past to advance the state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.network import NetworkConfig, RiskHead

#: the architecture names model.json records
WINDOW, INCREMENTAL = "window", "incremental"


@dataclass(frozen=True)
class IncrementalConfig:
    """The incremental encoder's own hyper-parameters (stored in model.json)."""

    #: events each attention layer sees: the event itself and ``band - 1`` before it
    band: int = 8

    def context(self, n_layers: int) -> int:
        """Events one step reads: an event's output depends on no older event."""
        return n_layers * (self.band - 1) + 1

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class LocalAttentionLayer(nn.Module):
    """Pre-norm transformer layer whose attention sees the ``band`` latest positions.

    Keys and values are gathered with ``band`` shifted slices (static count, so the
    ONNX graph is a fixed set of Slice ops) instead of a T×T mask: cost O(T · band).
    """

    def __init__(self, d: int, n_heads: int, d_ff: int, band: int) -> None:
        super().__init__()
        self.d, self.heads, self.band = d, n_heads, band
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))

    def forward(self, x: torch.Tensor, dense: bool = False) -> torch.Tensor:
        """``dense``: one masked T×T attention (``last`` over every position);
        otherwise ``band`` shifted slices, O(T · band) memory (long training sequences).
        Same function either way (``tests/models/test_incremental_network.py``)."""
        b, t, d = x.shape
        if dense:
            return self.last(x, t)
        h, dh, w = self.heads, d // self.heads, self.band
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        # left-pad by band-1 so position i sees keys i-band+1 … i; the pads are
        # masked (the diagonal never is, so no row is empty)
        kp = torch.cat([k.new_zeros(b, w - 1, d), k], dim=1)
        vp = torch.cat([v.new_zeros(b, w - 1, d), v], dim=1)
        keys = torch.stack([kp[:, j : j + t] for j in range(w)], dim=2)  # [B, T, W, d]
        vals = torch.stack([vp[:, j : j + t] for j in range(w)], dim=2)
        qh = q.reshape(b, t, 1, h, dh)
        att = (qh * keys.reshape(b, t, w, h, dh)).sum(-1) / math.sqrt(dh)  # [B, T, W, H]
        pos = torch.arange(t, device=x.device).view(1, t, 1, 1)
        slot = torch.arange(w, device=x.device).view(1, 1, w, 1)
        att = att.masked_fill(pos + slot < w - 1, float("-inf")).softmax(dim=2)
        mixed = (att.unsqueeze(-1) * vals.reshape(b, t, w, h, dh)).sum(2).reshape(b, t, d)
        x = x + self.proj(mixed)
        return x + self.ff(self.norm2(x))

    def last(self, x: torch.Tensor, keep: int) -> torch.Tensor:
        """The outputs of the last ``keep`` positions only, with one masked attention of
        their queries over every position's keys. The step reads one output, so its
        last layer needs one query and each layer below ``band - 1`` more: the queries,
        projection and feed-forward of the other positions were computed for nothing
        (about half of the step's arithmetic with two layers)."""
        b, t, d = x.shape
        h, dh, w = self.heads, d // self.heads, self.band
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        qh = q[:, t - keep :].reshape(b, keep, h, dh).transpose(1, 2)
        kh, vh = (z.reshape(b, t, h, dh).transpose(1, 2) for z in (k, v))
        gap = torch.arange(t - keep, t, device=x.device).view(keep, 1) - torch.arange(
            t, device=x.device
        ).view(1, t)  # query minus key position
        att = (qh @ kh.transpose(-1, -2)) / math.sqrt(dh)
        att = att.masked_fill((gap < 0) | (gap >= w), float("-inf")).softmax(dim=-1)
        mixed = (att @ vh).transpose(1, 2).reshape(b, keep, d)
        y = x[:, t - keep :] + self.proj(mixed)
        return y + self.ff(self.norm2(y))


class IncrementalEncoder(nn.Module):
    """Event tokens → per-event states; ``step`` advances one card by one event."""

    def __init__(self, cfg: NetworkConfig, inc: IncrementalConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.context = inc.context(cfg.n_layers)
        self.project = nn.Linear(cfg.n_numeric, d)
        self.mcc = nn.Embedding(cfg.n_mcc, d, padding_idx=0)
        self.channel = nn.Embedding(cfg.n_channel, d, padding_idx=0)
        self.start = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.layers = nn.ModuleList(
            LocalAttentionLayer(d, cfg.n_heads, cfg.d_ff, inc.band) for _ in range(cfg.n_layers)
        )
        self.lstm = nn.LSTM(d, d, batch_first=True)
        self.out = nn.Linear(d, cfg.embedding_dim)

    def tokens(self, num: torch.Tensor, mcc: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
        return self.project(num) + self.mcc(mcc) + self.channel(channel)

    def attend(self, x: torch.Tensor, dense: bool = False) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, dense)
        return x

    def attend_last(self, x: torch.Tensor) -> torch.Tensor:
        """``attend(x)[:, -1:]``, computing at each layer only the positions the last
        output depends on (``LocalAttentionLayer.last``)."""
        layers: list[LocalAttentionLayer] = list(self.layers)  # type: ignore[arg-type]
        for i, layer in enumerate(layers):
            x = layer.last(x, (len(layers) - 1 - i) * (layer.band - 1) + 1)
        return x[:, -1:]

    def empty_embedding(self) -> torch.Tensor:
        """The embedding of a card with no events: zero LSTM state."""
        return torch.tanh(self.out(self.out.weight.new_zeros(1, self.out.in_features)))

    def sequence(self, num: torch.Tensor, mcc: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
        """Embeddings *after* each event [B, T, E] of cards' sequences from their first
        event (right padding is harmless: everything is causal)."""
        x = self.tokens(num, mcc, channel)
        b = x.shape[0]
        x = torch.cat([self.start.expand(b, self.context - 1, -1), x], dim=1)
        z = self.attend(x)[:, self.context - 1 :]
        y, _ = self.lstm(z)
        return torch.tanh(self.out(y))

    def final_state(
        self, num: torch.Tensor, mcc: torch.Tensor, channel: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The state ``(h, c)`` and embedding after the last event of equal-length
        sequences from their first event: a whole rebuild in one call, the same function
        as stepping through them (``models.export_incremental.check_rebuild_parity``)."""
        x = self.tokens(num, mcc, channel)
        b = x.shape[0]
        x = torch.cat([self.start.expand(b, self.context - 1, -1), x], dim=1)
        z = self.attend(x)[:, self.context - 1 :]
        _, (h, c) = self.lstm(z)
        h, c = h.squeeze(0), c.squeeze(0)
        return h, c, torch.tanh(self.out(h))

    def step(
        self,
        ctx_num: torch.Tensor,
        ctx_mcc: torch.Tensor,
        ctx_channel: torch.Tensor,
        ctx_pad: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One event per card: its last ``context`` events (the new one last; ``ctx_pad``
        True before the card's first event) and its state → new state and embedding."""
        x = self.tokens(ctx_num, ctx_mcc, ctx_channel)
        x = torch.where(ctx_pad.unsqueeze(-1), self.start.expand_as(x), x)
        z = self.attend_last(x)
        _, (h2, c2) = self.lstm(z, (h.unsqueeze(0), c.unsqueeze(0)))
        h2, c2 = h2.squeeze(0), c2.squeeze(0)
        return h2, c2, torch.tanh(self.out(h2))


class IncrementalRiskModel(nn.Module):
    """Incremental encoder + the same head as the window model, trained end to end on
    whole card sequences: event t is scored with the embedding after event t-1."""

    def __init__(self, cfg: NetworkConfig, inc: IncrementalConfig) -> None:
        super().__init__()
        self.cfg, self.inc = cfg, inc
        self.encoder = IncrementalEncoder(cfg, inc)
        self.head = RiskHead(cfg)

    def before_each(
        self, num: torch.Tensor, mcc: torch.Tensor, channel: torch.Tensor
    ) -> torch.Tensor:
        """The embedding each event is scored with: the state after the events before it."""
        after = self.encoder.sequence(num, mcc, channel)
        first = self.encoder.empty_embedding().expand(after.shape[0], 1, -1)
        return torch.cat([first, after[:, :-1]], dim=1)

    def forward(
        self,
        num: torch.Tensor,
        mcc: torch.Tensor,
        channel: torch.Tensor,
        entity: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, T] of every event of the sequences."""
        emb = self.before_each(num, mcc, channel)
        b, t = mcc.shape
        flat_entity = None if entity is None else entity.reshape(b * t, -1)
        logits = self.head(
            emb.reshape(b * t, -1),
            num.reshape(b * t, -1),
            mcc.reshape(b * t),
            channel.reshape(b * t),
            flat_entity,
        )
        return logits.reshape(b, t)
