"""CRF against brute-force enumeration, entity pooling, and the paper's metrics on hand-computed examples."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from model.heads import CRF, entity_pool
from model.metrics import mner_scores, mre_scores


def _crf_case() -> tuple[CRF, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    crf = CRF(3)
    with torch.no_grad():  # larger than the init so that transitions matter for the best path
        for p in crf.parameters():
            p.normal_(0, 1.0)
    emissions = torch.randn(4, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    tags = torch.randint(0, 3, (4, 4))
    return crf, emissions, tags, mask


@torch.no_grad()
def _path_score(crf: CRF, em: torch.Tensor, path: tuple[int, ...]) -> float:
    s = crf.start[path[0]] + em[0, path[0]]
    for i in range(1, len(path)):
        s = s + crf.transitions[path[i - 1], path[i]] + em[i, path[i]]
    return float(s + crf.end[path[-1]])


def test_crf_nll_matches_brute_force() -> None:
    crf, emissions, tags, mask = _crf_case()
    nll = crf.nll(emissions, tags, mask)
    assert nll.shape == (4,)
    for b in range(4):
        n = int(mask[b].sum())
        scores = [_path_score(crf, emissions[b], p) for p in itertools.product(range(3), repeat=n)]
        log_z = math.log(sum(math.exp(s) for s in scores))
        gold = _path_score(crf, emissions[b], tuple(tags[b, :n].tolist()))
        assert nll[b].item() == pytest.approx(log_z - gold, abs=1e-4)


def test_crf_decode_matches_brute_force() -> None:
    crf, emissions, _, mask = _crf_case()
    best = crf.decode(emissions, mask)
    for b in range(4):
        n = int(mask[b].sum())
        brute = max(itertools.product(range(3), repeat=n), key=lambda p: _path_score(crf, emissions[b], p))
        assert best[b] == list(brute)


def test_crf_refuses_a_masked_first_word_and_is_differentiable() -> None:
    crf, emissions, tags, mask = _crf_case()
    emissions.requires_grad_(True)
    crf.nll(emissions, tags, mask).sum().backward()
    assert emissions.grad[2, 1:].abs().sum() == 0 and emissions.grad[0].abs().sum() > 0
    bad = mask.clone()
    bad[1, 0] = False
    with pytest.raises(ValueError, match=r"mask\[:, 0\]"):
        crf.nll(emissions, tags, bad)


def test_entity_pool_is_the_span_means() -> None:
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float).view(2, 5, 3)
    head = torch.tensor([[0, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float)
    tail = torch.tensor([[0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.float)  # sample 1: truncated away
    out = entity_pool(hidden, head, tail)
    assert out.shape == (2, 6)
    assert torch.equal(out[0], torch.cat([(hidden[0, 1] + hidden[0, 2]) / 2, hidden[0, 3]]))
    assert torch.equal(out[1], torch.cat([hidden[1, 0], torch.zeros(3)]))


def test_mner_scores_are_span_level_percentages() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-MISC", "O"]]
    # gold spans: PER(0-1), LOC(3), ORG(0), MISC(2-3) = 4; predicted: PER, ORG(3), ORG(0), MISC(2) = 4;
    # exact matches: PER and ORG(0) = 2 -> P = R = F1 = 50%.
    s = mner_scores(gold, pred)
    assert s == pytest.approx({"f1": 50.0, "precision": 50.0, "recall": 50.0})
    # Default CoNLL mode: an I- tag may open a span, so I-PER I-PER is the span PER(0-1).
    s = mner_scores([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]])
    assert s["f1"] == pytest.approx(100.0)
    s = mner_scores([["B-PER", "O"], ["O", "O"]], [["B-PER", "O"], ["B-LOC", "O"]])
    assert s == pytest.approx({"f1": 100 * 2 * 0.5 / 1.5, "precision": 50.0, "recall": 100.0})
    assert mner_scores([["O"]], [["O"]]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}


def test_mre_scores_exclude_none_from_f1() -> None:
    none = 0
    gold = [0, 1, 2, 2, 0, 3]
    pred = [0, 1, 2, 0, 3, 1]
    # predicted positives: 1, 2, 3, 1 (4); gold positives: 1, 2, 2, 3 (4); correct positives: 1, 2 (2).
    s = mre_scores(gold, pred, none)
    assert s["precision"] == pytest.approx(50.0) and s["recall"] == pytest.approx(50.0)
    assert s["f1"] == pytest.approx(50.0)
    assert s["accuracy"] == pytest.approx(100 * 3 / 6)  # the None-None pair counts for accuracy only
    s = mre_scores([0, 0, 1], [0, 0, 0], none)
    assert s["f1"] == 0.0 and s["precision"] == 0.0 and s["recall"] == 0.0
    assert s["accuracy"] == pytest.approx(200 / 3)
    s = mre_scores([1, 2, 0], [1, 0, 0], none)
    assert s["precision"] == pytest.approx(100.0) and s["recall"] == pytest.approx(50.0)
    assert s["f1"] == pytest.approx(100 * 2 / 3)


def test_crf_equals_pytorch_crf_the_authors_crf() -> None:
    """The hand-written CRF against pytorch-crf (``torchcrf``, the CRF the authors' code uses) with the same start,
    end and transition scores: log-likelihood and Viterbi paths, on ragged batches."""
    torchcrf = pytest.importorskip("torchcrf")
    gen = torch.Generator().manual_seed(0)
    for tags_n, batch, words in ((9, 7, 12), (3, 5, 4), (13, 4, 20)):
        ours, theirs = CRF(tags_n), torchcrf.CRF(tags_n, batch_first=True)
        with torch.no_grad():
            theirs.start_transitions.copy_(ours.start)
            theirs.end_transitions.copy_(ours.end)
            theirs.transitions.copy_(ours.transitions)
        em = torch.randn(batch, words, tags_n, generator=gen)
        lengths = torch.randint(1, words + 1, (batch,), generator=gen)
        mask = torch.arange(words).unsqueeze(0) < lengths.unsqueeze(1)             # [B, W], first word kept
        gold = torch.randint(0, tags_n, (batch, words), generator=gen)
        loglik = theirs(em, gold, mask, reduction="none")                        # [B]
        assert torch.allclose(-ours.nll(em, gold, mask), loglik, rtol=1e-5, atol=1e-4)
        assert ours.decode(em, mask) == theirs.decode(em, mask)
