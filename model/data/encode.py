"""Tokenisation of samples into the tensors the model reads, once per dataset, and the batch ``collate``.

Per sample (one dict): ``input_ids`` [L], ``attention_mask`` [L], ``image_keys`` (whole image, then up
to ``max_objects`` existing crop paths), ``index``; MNER adds ``word_index`` [W] (first sub-token of
each kept word) and ``labels`` [W]; MRE adds ``head_mask`` [L], ``tail_mask`` [L] and ``label``.

A fast tokenizer is required (``word_ids``). RoBERTa-style byte-level tokenizers must be created
with ``add_prefix_space=True`` to accept pre-split words; that is the caller's job
(``AutoTokenizer.from_pretrained(name, add_prefix_space=True)``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from model.data.types import DataError, Sample

log = logging.getLogger("i2srm")

ENTITY_MARKERS = ("<s>", "</s>", "<o>", "</o>")
ALT_ENTITY_MARKERS = ("<sub>", "</sub>", "<obj>", "</obj>")


def add_entity_markers(tokenizer: Any) -> tuple[str, str, str, str]:
    """Add the MRE entity markers (head open/close, tail open/close) as special tokens; return them.

    The paper's markers are ``<s> </s> <o> </o>``. A tokenizer that already uses ``<s>``/``</s>`` as
    its own special tokens (RoBERTa: BOS/EOS) gets ``<sub> </sub> <obj> </obj>`` instead. Adding is
    idempotent. The caller must then resize the text encoder's embeddings to ``len(tokenizer)``.
    """
    own = set(tokenizer.all_special_tokens)
    if own >= set(ENTITY_MARKERS):  # added before
        markers = ENTITY_MARKERS
    elif own >= set(ALT_ENTITY_MARKERS) or own & {"<s>", "</s>"}:  # <s>/</s> are the tokenizer's own
        markers = ALT_ENTITY_MARKERS
    else:
        markers = ENTITY_MARKERS
    missing = [m for m in markers if m not in own]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    return markers


def _require_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer; encoding needs word_ids() "
                         "(load it with AutoTokenizer.from_pretrained(..., use_fast=True)).")


def _visible_words(sentences: list[list[str]], tokenizer: Any) -> list[list[str]]:
    """Replace words that tokenise to nothing (empty, zero-width, control characters) by the unk token,
    so every word keeps a first sub-token and its label stays aligned."""
    unique = sorted({w for s in sentences for w in s})
    if not unique:
        return sentences
    ids = tokenizer(unique, add_special_tokens=False)["input_ids"]
    empty = {w for w, i in zip(unique, ids) if not i}
    if not empty:
        return sentences
    unk = tokenizer.unk_token
    return [[unk if w in empty else w for w in s] for s in sentences]


def _image_keys(sample: Sample, max_objects: int) -> tuple[list[str], int]:
    """The whole image, then the first ``max_objects`` listed crops that exist (a missing crop file is
    skipped, so its slot is masked rather than filled with a blank); also how many listed crops were missing."""
    keys, missing = [sample.image], 0
    for crop in sample.crops:
        if len(keys) > max_objects:
            break
        if Path(crop).is_file():
            keys.append(crop)
        else:
            missing += 1
    return keys, missing


class EncodedDataset(Dataset):
    """The per-sample dicts of one split, with what ``collate`` needs (pad id, max_objects)."""

    def __init__(self, items: list[dict[str, Any]], samples: list[Sample], task: str, pad_id: int,
                 max_objects: int, truncated: int = 0, missing_crops: int = 0):
        self.items = items
        self.samples = samples
        self.task = task
        self.pad_id = pad_id
        self.max_objects = max_objects
        self.truncated = truncated
        """Samples whose text was cut at max_len (MNER: words dropped; MRE: context dropped)."""
        self.missing_crops = missing_crops

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]

    @property
    def collate(self) -> "Collator":
        return Collator(self.pad_id, self.max_objects)


def encode_mner(samples: list[Sample], tokenizer: Any, max_len: int, label_names: Sequence[str],
                max_objects: int) -> EncodedDataset:
    """Sub-word tokens of each sentence, cut at ``max_len`` (special tokens included); each word's label
    sits on its first sub-token. Words cut by truncation are dropped from ``word_index``/``labels``."""
    _require_fast(tokenizer)
    label_id = {name: i for i, name in enumerate(label_names)}
    words = _visible_words([s.tokens for s in samples], tokenizer)
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_len)
    items, truncated, missing_crops = [], 0, 0
    for i, sample in enumerate(samples):
        first: dict[int, int] = {}
        for pos, w in enumerate(enc.word_ids(i)):
            if w is not None and w not in first:
                first[w] = pos
        kept = sorted(first)  # a prefix 0..k-1 of the words: truncation only cuts the end
        truncated += len(kept) < len(sample.tokens)
        assert sample.labels is not None, f"{sample.source}: MNER sample without labels"
        try:
            labels = [label_id[sample.labels[w]] for w in kept]
        except KeyError as e:
            raise DataError(f"{sample.source}: label {e.args[0]!r} not in {list(label_names)}.") from None
        keys, miss = _image_keys(sample, max_objects)
        missing_crops += miss
        items.append({
            "input_ids": torch.tensor(enc["input_ids"][i], dtype=torch.long),  # [L]
            "attention_mask": torch.tensor(enc["attention_mask"][i], dtype=torch.long),  # [L]
            "word_index": torch.tensor([first[w] for w in kept], dtype=torch.long),  # [W]
            "labels": torch.tensor(labels, dtype=torch.long),  # [W]
            "image_keys": keys,
            "index": i,
        })
    if truncated:
        log.info("%d of %d sentences longer than data.max_len=%d sub-tokens; their last words are cut.",
                 truncated, len(samples), max_len)
    return EncodedDataset(items, samples, "mner", _pad_id(tokenizer), max_objects, truncated, missing_crops)


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


def _insert_markers(tokens: list[str], head: tuple[int, int], tail: tuple[int, int],
                    markers: Sequence[str]) -> tuple[list[str], list[int]]:
    """Words with the four markers inserted, and the word index of each marker (head open/close, tail
    open/close). Either order works; overlapping spans nest (inner closes first)."""
    spans = [(head, 0), (tail, 2)]  # (span, index of its open marker in ``markers``)
    words: list[str] = []
    where = [0, 0, 0, 0]
    for i in range(len(tokens) + 1):
        # close the span opened last first, then open the one that ends last first: valid nesting
        closing = sorted((sp for sp in spans if sp[0][1] == i), key=lambda sp: (-sp[0][0], -sp[1]))
        opening = sorted((sp for sp in spans if sp[0][0] == i), key=lambda sp: (-sp[0][1], sp[1]))
        for _, m in closing:
            where[m + 1] = len(words)
            words.append(markers[m + 1])
        for _, m in opening:
            where[m] = len(words)
            words.append(markers[m])
        if i < len(tokens):
            words.append(tokens[i])
    return words, where


def _select(special: list[int], must: list[int], priority: list[int], budget: int) -> list[int]:
    """Positions kept when a marked sequence is longer than ``max_len``: all special tokens, then
    ``must`` (markers first), then the rest by ``priority`` (nearest the entities first)."""
    keep = set(special)
    for p in must + priority:
        if len(keep) >= budget:
            break
        keep.add(p)
    return sorted(keep)


def encode_mre(samples: list[Sample], tokenizer: Any, max_len: int, rel2id: dict[str, int],
               markers: Sequence[str], max_objects: int) -> EncodedDataset:
    """Sub-word tokens with entity markers around head and tail, cut at ``max_len``.

    A long text keeps both entities: all four markers, then the entities' sub-tokens, then the
    context nearest to them (the middle of a long text may go). ``head_mask``/``tail_mask`` are 1.0
    on the sub-tokens strictly between an entity's markers (markers of the other entity excluded);
    if none survives, the mask falls back to the opening marker's position so a mean never runs
    over zero tokens.
    """
    _require_fast(tokenizer)
    marker_ids = tokenizer.convert_tokens_to_ids(list(markers))
    if len(set(marker_ids)) != 4 or tokenizer.unk_token_id in marker_ids:
        raise ValueError(f"entity markers {list(markers)} are not tokens of this tokenizer; "
                         "call add_entity_markers(tokenizer) first.")
    guarded = [[_unmark(w, markers) for w in s.tokens] for s in samples]
    visible = _visible_words(guarded, tokenizer)
    marked = []
    for s, words in zip(samples, visible):
        assert s.head is not None and s.tail is not None, f"{s.source}: MRE sample without entities"
        marked.append(_insert_markers(words, s.head, s.tail, markers))
    enc = tokenizer([w for w, _ in marked], is_split_into_words=True, truncation=False)
    items, truncated, missing_crops = [], 0, 0
    for i, (sample, (_, where)) in enumerate(zip(samples, marked)):
        ids, word_ids = enc["input_ids"][i], enc.word_ids(i)
        pos_of_word: dict[int, list[int]] = {}
        for pos, w in enumerate(word_ids):
            if w is not None:
                pos_of_word.setdefault(w, []).append(pos)
        mpos = []
        for k, w in enumerate(where):
            found = pos_of_word.get(w, [])
            if len(found) != 1 or ids[found[0]] != marker_ids[k]:
                raise ValueError(f"{sample.source}: marker {markers[k]} is not a single special token; "
                                 "call add_entity_markers(tokenizer) before encoding.")
            mpos.append(found[0])
        marker_set = set(mpos)
        inside = [[p for p in range(mpos[o] + 1, mpos[o + 1]) if p not in marker_set and word_ids[p] is not None]
                  for o in (0, 2)]  # head, tail content positions in the full sequence
        n = len(ids)
        if n > max_len:
            truncated += 1
            special = [p for p, w in enumerate(word_ids) if w is None]
            if len(special) + 4 > max_len:
                raise ValueError(f"data.max_len={max_len} leaves no room for the 4 entity markers.")
            # entity sub-tokens interleaved by offset from their opening marker: both entities keep their start
            ent = sorted({p for span in inside for p in span},
                         key=lambda p: (min(abs(p - mpos[0]), abs(p - mpos[2])), p))
            taken = marker_set | set(ent)
            rest = [p for p in range(n) if word_ids[p] is not None and p not in taken]
            rest.sort(key=lambda p: (min(abs(p - a) for a in taken), p))  # context nearest an entity first
            positions = _select(special, mpos + ent, rest, max_len)
        else:
            positions = list(range(n))
        new_of = {p: j for j, p in enumerate(positions)}
        L = len(positions)
        masks = []
        for o, span in zip((0, 2), inside):
            m = torch.zeros(L)  # [L]
            kept = [new_of[p] for p in span if p in new_of]
            if kept:
                m[kept] = 1.0
            else:  # entity fully cut (or tokenised to nothing): the opening marker stands in for it
                fallback = next((new_of[p] for p in (mpos[o], mpos[o + 1]) if p in new_of), 0)
                m[fallback] = 1.0
            masks.append(m)
        relation = sample.relation
        if relation not in rel2id:
            raise DataError(f"{sample.source}: relation {relation!r} not in rel2id.")
        keys, miss = _image_keys(sample, max_objects)
        missing_crops += miss
        items.append({
            "input_ids": torch.tensor([ids[p] for p in positions], dtype=torch.long),  # [L]
            "attention_mask": torch.ones(L, dtype=torch.long),  # [L]
            "head_mask": masks[0],  # [L]
            "tail_mask": masks[1],  # [L]
            "label": torch.tensor(rel2id[relation], dtype=torch.long),  # []
            "image_keys": keys,
            "index": i,
        })
    if truncated:
        log.info("%d of %d samples longer than data.max_len=%d sub-tokens; context away from the entities cut.",
                 truncated, len(samples), max_len)
    return EncodedDataset(items, samples, "mre", _pad_id(tokenizer), max_objects, truncated, missing_crops)


def _unmark(word: str, markers: Sequence[str]) -> str:
    """A text word that happens to contain a marker string (``<s>`` in a tweet) must not become a marker."""
    for m in markers:
        if m in word:
            word = word.replace(m, m.replace("<", "< "))
    return word


@dataclass(frozen=True)
class Collator:
    """``collate`` with the tokenizer's pad id and ``data.max_objects`` bound (picklable for workers)."""
    pad_id: int
    max_objects: int

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(batch, self.pad_id, self.max_objects)


def collate(batch: list[dict[str, Any]], pad_id: int = 0, max_objects: int | None = None) -> dict[str, Any]:
    """Right-pad a list of encoded samples into the batch contract.

    ``input_ids`` [B, L] (pad ``pad_id``), ``attention_mask`` [B, L]; MNER ``word_index`` [B, W],
    ``word_mask`` [B, W] bool, ``labels`` [B, W]; MRE ``head_mask``/``tail_mask`` [B, L], ``label`` [B];
    ``image_keys`` list[list[str]], ``object_mask`` [B, K] bool (K = ``max_objects``, default the
    most crops in the batch), ``index`` [B].
    """
    B = len(batch)
    L = max(len(b["input_ids"]) for b in batch)
    out: dict[str, Any] = {
        "input_ids": torch.full((B, L), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros(B, L, dtype=torch.long),
    }
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        out["input_ids"][i, :n] = b["input_ids"]
        out["attention_mask"][i, :n] = b["attention_mask"]
    if "word_index" in batch[0]:
        W = max(1, max(len(b["word_index"]) for b in batch))
        out["word_index"] = torch.zeros(B, W, dtype=torch.long)
        out["word_mask"] = torch.zeros(B, W, dtype=torch.bool)
        out["labels"] = torch.zeros(B, W, dtype=torch.long)
        for i, b in enumerate(batch):
            w = len(b["word_index"])
            out["word_index"][i, :w] = b["word_index"]
            out["word_mask"][i, :w] = True
            out["labels"][i, :w] = b["labels"]
    if "head_mask" in batch[0]:
        out["head_mask"] = torch.zeros(B, L)
        out["tail_mask"] = torch.zeros(B, L)
        for i, b in enumerate(batch):
            n = len(b["head_mask"])
            out["head_mask"][i, :n] = b["head_mask"]
            out["tail_mask"][i, :n] = b["tail_mask"]
        out["label"] = torch.stack([b["label"] for b in batch])
    K = max_objects if max_objects is not None else max(len(b["image_keys"]) - 1 for b in batch)
    out["image_keys"] = [list(b["image_keys"][: 1 + K]) for b in batch]
    out["object_mask"] = torch.tensor([[k < len(keys) - 1 for k in range(K)] for keys in out["image_keys"]],
                                      dtype=torch.bool).reshape(B, K)  # [B, K]
    out["index"] = torch.tensor([b["index"] for b in batch], dtype=torch.long)
    return out
