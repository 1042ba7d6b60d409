"""Task heads: a linear-chain CRF for MNER and entity pooling for MRE.

The CRF is batched over [B, W, T] emissions with a prefix mask [B, W] (each sentence's words first,
padding after); the forward algorithm and Viterbi loop over word positions only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CRF(nn.Module):
    """Linear-chain CRF with start, end and transition scores over ``num_tags`` tags."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        # Small uniform init, as common CRF layers do, so no transition starts out dominant.
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))  # [from, to]

    @staticmethod
    def _check(emissions: Tensor, mask: Tensor) -> Tensor:
        """The mask as bool, after checking shapes and that every sentence starts unmasked."""
        if emissions.dim() != 3 or mask.shape != emissions.shape[:2]:
            raise ValueError(f"CRF expects emissions [B, W, T] and mask [B, W]; got {tuple(emissions.shape)} "
                             f"and {tuple(mask.shape)}.")
        mask = mask.bool()
        # Checked on CPU tensors only: on an accelerator the check would stall every step on a host sync
        # (the data layer guarantees at least one word per sentence).
        if mask.shape[1] == 0 or (mask.device.type == "cpu" and not bool(mask[:, 0].all())):
            raise ValueError("CRF mask: every sentence needs its first word unmasked (mask[:, 0] all True).")
        return mask

    def _score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Score of the gold path, [B]."""
        b, w, _ = emissions.shape
        rows = torch.arange(b, device=emissions.device)
        m = mask.to(emissions.dtype)                                       # [B, W]
        emit = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)         # [B, W]
        score = self.start[tags[:, 0]] + (emit * m).sum(1)                 # [B]
        trans = self.transitions[tags[:, :-1], tags[:, 1:]]                # [B, W-1]
        score = score + (trans * m[:, 1:]).sum(1)
        last = tags[rows, mask.sum(1) - 1]                                 # [B] tag of the last real word
        return score + self.end[last]

    def _log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """log Z by the forward algorithm, [B]."""
        steps = emissions.unbind(1)                                        # W x [B, T]: one backward op
        keep = mask.unbind(1)
        alpha = self.start + steps[0]                                      # [B, T]
        for i in range(1, len(steps)):
            # [B, T_from, 1] + [T_from, T_to] + [B, 1, T_to] -> logsumexp over T_from -> [B, T_to]
            nxt = torch.logsumexp(alpha.unsqueeze(2) + self.transitions + steps[i].unsqueeze(1), dim=1)
            alpha = torch.where(keep[i].unsqueeze(1), nxt, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def nll(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Per-sentence negative log-likelihood of ``tags`` [B, W], [B]."""
        mask = self._check(emissions, mask)
        emissions = emissions.float()  # sums of many scores: fp32 even under bf16 autocast
        return self._log_partition(emissions, mask) - self._score(emissions, tags.long(), mask)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """Viterbi best path of each sentence, as many tags as its unmasked words."""
        mask = self._check(emissions, mask)
        emissions = emissions.float()
        b, w, t = emissions.shape
        score = self.start + emissions[:, 0]                               # [B, T]
        backpointers = []
        for i in range(1, w):
            cand = score.unsqueeze(2) + self.transitions                    # [B, T_from, T_to]
            best, arg = cand.max(dim=1)                                     # [B, T_to]
            nxt = best + emissions[:, i]
            keep = mask[:, i].unsqueeze(1)
            score = torch.where(keep, nxt, score)
            # Past a sentence's end, point each tag at itself so the backtrack carries the last tag through.
            ident = torch.arange(t, device=emissions.device).expand(b, t)
            backpointers.append(torch.where(keep, arg, ident))             # [B, T]
        tag = (score + self.end).argmax(dim=1)                             # [B]
        path = [tag]
        for bp in reversed(backpointers):
            tag = bp.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        tags = torch.stack(path[::-1], dim=1)                              # [B, W]
        lengths = mask.sum(1).tolist()
        return [row[:n] for row, n in zip(tags.tolist(), lengths)]


def entity_pool(hidden: Tensor, head_mask: Tensor, tail_mask: Tensor) -> Tensor:
    """Mean of the states inside the head markers, then inside the tail markers: [B, L, H] -> [B, 2H].

    An empty span (its marker pair was truncated away) pools to zeros rather than NaN.
    """
    def pool(m: Tensor) -> Tensor:
        m = m.to(hidden.dtype)                                              # [B, L]
        total = torch.einsum("bl,blh->bh", m, hidden)                       # [B, H]
        return total / m.sum(1, keepdim=True).clamp_min(1.0)
    return torch.cat([pool(head_mask), pool(tail_mask)], dim=-1)           # [B, 2H]
