"""Task metrics as the paper reports them: percentages (77.12, not 0.7712).

MNER: entity-level micro precision / recall / F1 over exact spans (seqeval, default CoNLL mode).
MRE: micro F1 over samples whose gold or predicted relation is not the negative class, plus accuracy.
"""

from __future__ import annotations

from seqeval.metrics import f1_score, precision_score, recall_score


def mner_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Span-level micro scores of BIO tag sequences, in percent; no entities anywhere -> 0."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("mner_scores: gold and predicted tag sequences must have the same lengths.")
    kw = {"average": "micro", "zero_division": 0}
    return {
        "f1": 100.0 * float(f1_score(gold, pred, **kw)),
        "precision": 100.0 * float(precision_score(gold, pred, **kw)),
        "recall": 100.0 * float(recall_score(gold, pred, **kw)),
    }


def mre_scores(gold: list[int], pred: list[int], none_id: int) -> dict[str, float]:
    """Micro P/R/F1 over non-None relations and accuracy over all samples, in percent."""
    if len(gold) != len(pred):
        raise ValueError(f"mre_scores: {len(gold)} gold labels but {len(pred)} predictions.")
    correct_pos = sum(1 for g, p in zip(gold, pred) if g == p and g != none_id)
    pred_pos = sum(1 for p in pred if p != none_id)
    gold_pos = sum(1 for g in gold if g != none_id)
    precision = correct_pos / pred_pos if pred_pos else 0.0
    recall = correct_pos / gold_pos if gold_pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(1 for g, p in zip(gold, pred) if g == p) / len(gold) if gold else 0.0
    return {"f1": 100.0 * f1, "precision": 100.0 * precision, "recall": 100.0 * recall,
            "accuracy": 100.0 * accuracy}
