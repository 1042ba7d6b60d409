"""The multi-level gated visual prefix and the text encoder call that consumes it (prefix tuning).

``VisualPrefix`` turns the visual cells [B, 1 + K, P, C] into, for every transformer layer, extra keys
and values [B, heads, (1 + K) * P, head_dim]; ``encode_with_prefix`` prepends them in every self-attention
layer of a Hugging Face encoder through a fresh ``DynamicCache`` (the forward's ``cache`` argument),
the text's positions starting where they would without a prefix or after it (``model.prefix_positions``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedModel

from model.config import LAYOUTS

NUM_CANDIDATES = 4  # the method's four candidate key/value blocks per cell (part of the architecture)

Prefix = list[tuple[Tensor, Tensor]]  # per layer (key, value), each [B, heads, T, head_dim]


class VisualPrefix(nn.Module):
    """Visual cells -> per-layer prefix keys/values, mixed from four candidates by a per-layer gate.

    The gate follows HVPNeT: for each image slot (the whole image and each crop separately) the four
    candidate blocks are averaged, a per-layer ``Linear(P * 2 * hidden -> 4)`` scores them, and a
    softmax over LeakyReLU of those scores weights the candidates. So the gate depends on the input
    image and differs per layer, which lets shallow and deep layers draw on different visual levels.
    """

    def __init__(self, cells_dim: int, prompt_len: int, prompt_hidden: int, num_layers: int,
                 num_heads: int, hidden: int, norm: str = "batch", layout: str = "reference",
                 head_split: str = "reference", empty_crops: str = "clean") -> None:
        super().__init__()
        if layout not in LAYOUTS or head_split not in LAYOUTS or empty_crops not in LAYOUTS:
            raise ValueError(f"prefix layout {layout!r} / head split {head_split!r} / empty crops {empty_crops!r}; "
                             f"allowed: {', '.join(LAYOUTS)}.")
        self.layout, self.head_split = layout, head_split
        # model.empty_crops=reference: an absent crop's slot holds the zero image's features and takes part in the
        # prefix like an image (normalised, visible); its mask entry only keeps it out of the batch statistics.
        self.zero_image = empty_crops == "reference"
        # model.prefix_norm: per-channel standardisation exposes what tells images apart (a frozen backbone's
        # cells share a large common component) and keeps the MLP's Tanh out of saturation.
        self.norm: nn.Module = {"batch": lambda: nn.BatchNorm1d(cells_dim), "layer": lambda: nn.LayerNorm(cells_dim),
                                "none": nn.Identity}[norm]()
        if hidden % num_heads:
            raise ValueError(f"text encoder hidden size {hidden} is not divisible by its {num_heads} heads.")
        self.prompt_len, self.num_layers = prompt_len, num_layers
        self.num_heads, self.hidden = num_heads, hidden
        self.mlp = nn.Sequential(
            nn.Linear(cells_dim, prompt_hidden),
            nn.Tanh(),
            nn.Linear(prompt_hidden, NUM_CANDIDATES * 2 * hidden),
        )
        self.gates = nn.ModuleList(
            nn.Linear(prompt_len * 2 * hidden, NUM_CANDIDATES) for _ in range(num_layers))

    def _normalise(self, cells: Tensor, mask: Tensor) -> Tensor:
        """cells [B, S, P, C] -> same; batch statistics come from existing images only, not empty crop slots,
        which come out zero, or under ``model.empty_crops=reference`` normalised with those statistics."""
        if not isinstance(self.norm, nn.BatchNorm1d):
            return self.norm(cells)
        return masked_batch_norm(cells, mask[:, :, None].expand(cells.shape[:3]), self.norm,
                                 zero_invalid=not self.zero_image)

    def forward(self, cells: Tensor, mask: Tensor) -> tuple[Prefix, Tensor]:
        """cells [B, S, P, C] (S = 1 + K slots), mask [B, S] bool -> (per-layer (key, value), mask [B, S * P])."""
        b, s, p, _ = cells.shape
        if p != self.prompt_len:
            raise ValueError(f"visual cells have {p} cells per image but model.prompt_len is {self.prompt_len}; "
                             "features cached for another prompt_len cannot be reused.")
        # model.prefix_norm works on the backbone's channels (per channel, or per cell), whatever the layout;
        # model.prefix_layout then only decides how the normalised values are cut into P vectors.
        dtype = self.mlp[0].weight.dtype
        assert isinstance(dtype, torch.dtype)
        cells = arrange_cells(self._normalise(cells.to(dtype), mask), self.layout)  # [B, S, P, C]
        cand = self.mlp(cells)                                             # [B, S, P, 4 * 2H]
        cand = cand.view(b, s, p, NUM_CANDIDATES, 2 * self.hidden)         # [B, S, P, 4, 2H]
        summary = cand.mean(dim=3).reshape(b, s, p * 2 * self.hidden)      # [B, S, P * 2H]
        prefix: Prefix = []
        for gate in self.gates:
            weights = F.softmax(F.leaky_relu(gate(summary)), dim=-1)       # [B, S, 4]
            kv = torch.einsum("bsc,bspch->bsph", weights.to(cand.dtype), cand)  # [B, S, P, 2H]
            kv = kv.reshape(b, s * p, 2 * self.hidden)                     # [B, T, 2H]
            key, value = kv.split(self.hidden, dim=-1)                     # each [B, T, H]
            prefix.append((split_heads(key, self.num_heads, self.head_split),
                           split_heads(value, self.num_heads, self.head_split)))  # each [B, heads, T, hd]
        if self.head_split == "reference" or self.zero_image:
            # reference heads: every head position mixes pieces of several slots, so no position belongs to one
            # slot alone; as in the reference, every prefix position is visible (an empty crop slot carries zero
            # cells, or the zero image). The zero image is an image to the authors: visible under either split.
            prefix_mask = mask.new_ones(b, s * p, dtype=torch.long)
        else:
            prefix_mask = mask.to(torch.long).repeat_interleave(p, dim=1)  # [B, S * P], 0 for empty slots
        return prefix, prefix_mask


def arrange_cells(cells: Tensor, layout: str) -> Tensor:
    """The ``P`` prefix vectors of each image slot, [..., P, C] -> [..., P, C] (``model.prefix_layout``).

    ``cells`` come from the backbone cell-major: vector p is spatial cell p with the channels of the four
    stages. ``clean`` keeps that. ``reference`` lays the pooled block out channel-major ([C, P] in memory, as
    the four pooled stages concatenated on the channel axis are) and reads it back in memory order as P
    vectors of C values: vector p holds channels p*C/P .. (p+1)*C/P - 1, each over all P cells (value j of
    vector p is channel (p*C + j) // P at cell (p*C + j) % P).
    """
    if layout == "clean":
        return cells
    *lead, p, c = cells.shape
    return cells.transpose(-1, -2).reshape(*lead, p, c)


def split_heads(x: Tensor, heads: int, split: str) -> Tensor:
    """Prefix keys or values [B, T, H] -> [B, heads, T, H / heads] (``model.prefix_heads``).

    ``clean``: the standard split, head h sees channels h*hd .. (h+1)*hd - 1 of every position. ``reference``:
    the memory-order reshape without a permute, so head h sees the run of T*hd values starting at h*T*hd of the
    flattened [T, H] block: position t of head h is slot-position (h*T + t) // heads, channels
    ((h*T + t) % heads)*hd onwards. With T == heads, head h sees prefix position h cut into hd-wide pieces.
    """
    b, t, h = x.shape
    if h % heads:
        raise ValueError(f"prefix width {h} is not divisible by {heads} heads.")
    if split == "reference":
        return x.reshape(b, heads, t, h // heads)
    return x.reshape(b, t, heads, h // heads).transpose(1, 2).contiguous()


def masked_batch_norm(x: Tensor, valid: Tensor, bn: nn.BatchNorm1d, zero_invalid: bool = True) -> Tensor:
    """``bn`` over the rows of x [..., C] where ``valid`` [...] is True; the other rows come out zero, or with
    ``zero_invalid`` false normalised with the statistics of the valid rows.

    The same numbers, running statistics and gradients as ``bn(x[valid])``, computed with weights instead
    of boolean indexing, whose output size depends on the mask's contents and so costs a host-device
    synchronisation every step on CUDA.
    """
    w = valid.unsqueeze(-1).to(x.dtype)                                    # [..., 1]
    if bn.training or not bn.track_running_stats:
        dims = tuple(range(x.dim() - 1))
        n = w.sum()
        mean = (x * w).sum(dims) / n                                       # [C]
        var = (((x - mean) * w) ** 2).sum(dims) / n                        # [C] biased, as BatchNorm normalises
        if bn.training and bn.track_running_stats:
            assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), m)
                unbiased = var.detach() * n / (n - 1).clamp(min=1)
                bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), m)
    else:
        assert bn.running_mean is not None and bn.running_var is not None
        mean, var = bn.running_mean.to(x.dtype), bn.running_var.to(x.dtype)
    out = (x - mean) * torch.rsqrt(var + bn.eps)
    if bn.affine:
        out = out * bn.weight + bn.bias
    return out * w if zero_invalid else out


def text_position_ids(encoder: PreTrainedModel, input_ids: Tensor, offset: int = 0) -> Tensor:
    """The position ids the encoder gives the text behind a cache of ``offset`` positions, [B, L].

    BERT-like encoders count from ``offset``; RoBERTa-like ones from padding_idx + 1 + ``offset``, padding kept at
    padding_idx. ``offset`` 0: the positions the text has without a prefix (``model.prefix_positions=clean``);
    the prefix length: what a stock encoder computes when the prefix is its cache (I2SRM's RoBERTa on MNRE).
    """
    embeddings = getattr(encoder, "embeddings", None)
    make = getattr(embeddings, "create_position_ids_from_input_ids", None)
    padding_idx = getattr(embeddings, "padding_idx", None)
    if make is not None and padding_idx is not None:
        ids = make(input_ids, padding_idx, offset)
    else:
        length = input_ids.shape[1]
        ids = torch.arange(offset, offset + length, device=input_ids.device).unsqueeze(0).expand_as(input_ids)
    limit = getattr(encoder.config, "max_position_embeddings", None)
    start = offset + (padding_idx + 1 if make is not None and padding_idx is not None else 0)
    if offset and isinstance(limit, int) and start + input_ids.shape[1] > limit:  # the largest id is start + L - 1
        raise ValueError(f"text of {input_ids.shape[1]} tokens behind a prefix of {offset} positions needs position "
                         f"ids beyond the encoder's max_position_embeddings={limit}; lower data.max_len or "
                         f"model.prompt_len, or set model.prefix_positions=clean.")
    return ids


def encode_with_prefix(encoder: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor,
                       prefix: Prefix | None = None, prefix_mask: Tensor | None = None,
                       shift_positions: bool = False) -> Tensor:
    """Last hidden state [B, L, H] of ``encoder`` on the text, attending also to ``prefix`` in every layer.

    ``shift_positions``: the text's positions count on after the prefix (see ``text_position_ids``)."""
    if prefix is None:
        return encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    n_layers = encoder.config.num_hidden_layers
    if len(prefix) != n_layers:
        raise ValueError(f"prefix has {len(prefix)} layers, the text encoder {n_layers}.")
    if prefix_mask is None:
        prefix_mask = attention_mask.new_ones(prefix[0][0].shape[0], prefix[0][0].shape[2])
    device_type = input_ids.device.type
    # Under autocast the layer's own keys come out in the autocast dtype; the prefix must match them.
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    # A fresh cache each call: the forward appends the text's keys/values to it in place.
    cache = DynamicCache()
    for layer_idx, (key, value) in enumerate(prefix):
        if dtype is not None:
            key, value = key.to(dtype), value.to(dtype)
        cache.update(key, value, layer_idx)
    full_mask = torch.cat([prefix_mask.to(attention_mask.dtype), attention_mask], dim=1)  # [B, T + L]
    out = encoder(input_ids=input_ids, attention_mask=full_mask,
                  position_ids=text_position_ids(encoder, input_ids,
                                                 prefix[0][0].shape[2] if shift_positions else 0),
                  **{_cache_keyword(type(encoder)): cache})  # type: ignore[arg-type]  # (lru_cache: a class hashes)
    return out.last_hidden_state                                           # [B, L, H]


@functools.lru_cache(maxsize=None)
def _cache_keyword(encoder_class: type[Any]) -> str:
    """The keyword under which ``encoder_class.forward`` takes a ``Cache``.

    transformers 5.24 (the tested line) takes ``cache`` in every model's forward; ``past_key_values`` is only an
    alias there (``@deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")`` in models/bert/modeling_bert.py)
    that warns on every call and goes in 5.40. Older 5.x encoders only know ``past_key_values`` and would silently
    swallow an unknown ``cache`` in their ``**kwargs`` (the prefix ignored), so the name is read from the signature.
    """
    params = inspect.signature(encoder_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
