"""The sub-word CRF of the authors' MNER (``model.crf_span=reference``): tags on every sub-token, read back per word.

HVPNeT's NER data gives each word's label to its first sub-token, ``X`` to its continuation pieces, ``[CLS]`` and
``[SEP]`` to the special tokens and ``PAD`` to padding, and its CRF runs over the attention mask. Here the same tags
are derived from the batch the data layer already makes (``word_index``, ``word_mask``, ``labels``,
``attention_mask``): the tag set is the word labels followed by ``EXTRA_TAGS``. Evaluation reads the decoded tag of
each word's first sub-token, as the authors' scorer does (it skips the ``X`` and ``[SEP]`` positions); a first
sub-token decoded as one of ``EXTRA_TAGS`` is an ``O`` (index 0 of the word labels).
"""

from __future__ import annotations

import torch
from torch import Tensor

EXTRA_TAGS = ("X", "[CLS]", "[SEP]", "PAD")
"""Sub-word tags after the word labels: continuation piece, the two special tokens, padding (never scored)."""
O_INDEX = 0
"""Index of ``O`` among the word labels (``model.data.MNER_LABELS`` starts with it)."""


def num_tags(num_word_labels: int) -> int:
    """Size of the sub-word tag set: the word labels and ``EXTRA_TAGS``."""
    return num_word_labels + len(EXTRA_TAGS)


def token_tags(word_index: Tensor, word_mask: Tensor, labels: Tensor, attention_mask: Tensor,
               num_word_labels: int) -> Tensor:
    """Tags of every sub-token [B, L]: word labels on first sub-tokens, ``X`` on the other pieces, ``[CLS]`` on
    position 0, ``[SEP]`` on the last attended position, ``PAD`` beyond it.

    word_index, word_mask, labels [B, W]; attention_mask [B, L] (each sentence's tokens first, padding after).
    """
    x, cls, sep, pad = (num_word_labels + i for i in range(len(EXTRA_TAGS)))
    am = attention_mask.bool()
    tags = torch.where(am, x, pad)                                         # [B, L]
    tags[:, 0] = cls
    last = am.sum(1) - 1                                                   # [B] the [SEP] position
    tags = tags.scatter(1, last.unsqueeze(1), sep)
    # padded words point at position 0 with label 0: send them to a scratch column instead
    index = torch.where(word_mask.bool(), word_index, tags.shape[1])       # [B, W]
    wide = torch.cat([tags, tags.new_zeros(tags.shape[0], 1)], dim=1)      # [B, L + 1]
    return wide.scatter(1, index, labels.to(tags.dtype))[:, :-1]


def word_predictions(paths: list[list[int]], word_index: Tensor, word_mask: Tensor,
                     num_word_labels: int) -> list[list[int]]:
    """Each sentence's word labels from its decoded sub-token ``paths``: the tag at each word's first
    sub-token, ``O`` where that is one of ``EXTRA_TAGS``."""
    out = []
    for path, index, n in zip(paths, word_index.tolist(), word_mask.sum(1).tolist()):
        tags = [path[i] for i in index[:n]]
        out.append([t if t < num_word_labels else O_INDEX for t in tags])
    return out
