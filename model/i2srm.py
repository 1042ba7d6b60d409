"""I2SRM's two relationship-modelling pieces: the semantic (KL) loss and AttnMixup.

Intra-sample: ``semantic_kl`` pulls the visual distribution towards the textual one.
Inter-sample: ``CrossSampleTransfer`` lets every sample attend to the others of its batch (a second
view of each sample); ``reference_rows`` (the authors' layout) or ``clean_rows`` say which rows of the stack
enter the clean and the mixed loss for a given ``delta``; ``mixup`` / ``mixed_ce`` mix those rows with random
partners. Randomness comes from the global torch RNG, so ``train.seed`` fixes it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def semantic_kl(text_rep: Tensor, visual_rep: Tensor) -> Tensor:
    """KL(softmax(t) || softmax(v)), batch mean; text_rep, visual_rep [B, D] -> scalar."""
    return F.kl_div(F.log_softmax(visual_rep, dim=-1), F.softmax(text_rep, dim=-1), reduction="batchmean")


class CrossSampleTransfer(nn.Module):
    """One Transformer encoder layer run across the batch: each sample attends to the other samples.

    Sample vectors [B, D]: the batch is one sequence of length B. Token states [B, W, D] with a mask
    [B, W]: at each word position the B samples form a sequence, padding masked out.
    """

    def __init__(self, width: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"'i2srm.attn_heads' is {heads}; it must divide the sample width {width}.")
        self.layer = nn.TransformerEncoderLayer(d_model=width, nhead=heads, dim_feedforward=ff,
                                                dropout=dropout, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.dim() == 2:                                                   # [B, D]
            return self.layer(x.unsqueeze(0)).squeeze(0)                   # [B, D]
        if x.dim() != 3 or mask is None:
            raise ValueError("CrossSampleTransfer takes samples [B, D] or token states [B, W, D] with a mask [B, W].")
        seq = x.transpose(0, 1)                                            # [W, B, D]: one sequence per position
        pad = ~mask.transpose(0, 1).bool()                                 # [W, B] True = padding
        # A position where every sample is padding would softmax over nothing (NaN); let it attend
        # freely instead and discard its output below.
        pad = pad & ~pad.all(dim=1, keepdim=True)
        out = self.layer(seq, src_key_padding_mask=pad).transpose(0, 1)   # [B, W, D]
        return torch.where(mask.bool().unsqueeze(-1), out, x)             # padding keeps its input


def mixed_count(n_total: int, delta: float) -> int:
    """round(delta * n_total), halves rounded up (Python's round would send 0.5 to the even side)."""
    return min(n_total, int(math.floor(delta * n_total + 0.5)))


def select_mixed(n_total: int, n_orig_half: bool, delta: float,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Indices of the samples to mix and of the rest, both sorted [n_mix], [n_total - n_mix].

    ``n_orig_half``: the stack is [originals; transferred views] (n_total even); half of the mixed
    samples come from each end (the odd one out from the originals). Otherwise they come from all.
    """
    n_mix = mixed_count(n_total, delta)
    if n_orig_half:
        if n_total % 2:
            raise ValueError(f"a doubled stack has an even size, got {n_total}.")
        half = n_total // 2
        n_first = n_mix - n_mix // 2
        first = torch.randperm(half, generator=generator)[:n_first]
        second = torch.randperm(half, generator=generator)[: n_mix // 2] + half
        mixed = torch.cat([first, second])
    else:
        mixed = torch.randperm(n_total, generator=generator)[:n_mix]
    chosen = torch.zeros(n_total, dtype=torch.bool)
    chosen[mixed] = True
    return mixed.sort().values, (~chosen).nonzero().flatten()


class LossRows(NamedTuple):
    """Which rows of a stack of N samples enter each loss term (indices into the stack)."""
    clean: Tensor   # [n_clean] rows scored with the clean loss, CE(f(x), y)
    mixed: Tensor   # [M] the mixed set: rows that are mixed with a partner from this set
    scored: Tensor  # [n_scored] positions in ``mixed`` whose mixed loss is taken (0..M-1)


def reference_rows(n: int, delta: float, clean_share: float = 0.8, mix_share: float = 0.4,
                   mixing: bool = True) -> LossRows:
    """The authors' layout (``i2srm.loss_layout=reference``) on a stack of ``n`` rows.

    Clean loss: the first floor(clean_share * n) rows, whatever ``delta`` is. Mixed set: the first
    floor(delta/2 * n) rows and the rows from floor((1 - delta/2) * n) to the end; the mixed loss is taken on
    the first floor(mix_share * M) of them (M = size of the mixed set), each mixed with a random partner from
    the whole set. Deterministic: only the partners and lam are random. ``mixing=False``: no mixed set.
    """
    clean = torch.arange(int(math.floor(clean_share * n)))
    if not mixing or delta <= 0:
        empty = torch.zeros(0, dtype=torch.long)
        return LossRows(clean, empty, empty)
    head = int(math.floor(delta / 2 * n))
    tail = int(math.floor((1 - delta / 2) * n))
    mixed = torch.cat([torch.arange(head), torch.arange(max(tail, head), n)])
    scored = torch.arange(int(math.floor(mix_share * len(mixed))))
    return LossRows(clean, mixed, scored)


def clean_rows(n: int, doubled: bool, delta: float, mixing: bool = True,
               generator: torch.Generator | None = None) -> LossRows:
    """This project's earlier layout (``i2srm.loss_layout=clean``): a random ``delta`` share of the stack is
    mixed and scored with the mixed loss, every other row with the clean loss; a row is never in both."""
    if not mixing or mixed_count(n, delta) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return LossRows(torch.arange(n), empty, empty)
    mixed, unmixed = select_mixed(n, doubled, delta, generator)
    return LossRows(unmixed, mixed, torch.arange(len(mixed)))


def sample_lambda(alpha: float) -> float:
    """lam ~ Beta(alpha, alpha), drawn from the global torch RNG."""
    a = torch.tensor(float(alpha))
    return float(torch.distributions.Beta(a, a).sample())


def mixup(x: Tensor, idx: Tensor, lam: float, perm: Tensor) -> Tensor:
    """lam * x[idx] + (1 - lam) * x[idx][perm]; x [N, ...], idx [M], perm a permutation of range(M)."""
    chosen = x[idx.to(x.device)]                                          # [M, ...]
    return lam * chosen + (1.0 - lam) * chosen[perm.to(x.device)]


def mixed_ce(logits_mixed: Tensor, y_a: Tensor, y_b: Tensor, lam: float) -> Tensor:
    """lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b), each a mean over the mixed samples."""
    return lam * F.cross_entropy(logits_mixed, y_a) + (1.0 - lam) * F.cross_entropy(logits_mixed, y_b)
