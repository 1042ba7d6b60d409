"""I2SRM's losses and AttnMixup, alone and wired into the network, for every ablation row."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from model.config import ABLATIONS, Config, build_config
from model.encoders import resolve_text_encoder
from model.heads import entity_pool
from model.i2srm import (CrossSampleTransfer, mixed_ce, mixed_count, mixup, sample_lambda, select_mixed,
                         semantic_kl)
from model.network import I2SRMNetwork, build_network
from model.visual import ResNetFeatures, VisualFeatures, build_resnet
from tests.helpers import B, C, NUM_RELATIONS, NUM_TAGS, sample_batch, sample_visual, small_cfg, tiny_bert


# ---- the pieces -------------------------------------------------------------------------------
def test_semantic_kl_equals_a_hand_computation() -> None:
    t = torch.tensor([[0.2, -1.0, 0.5], [1.5, 0.0, -0.3]])
    v = torch.tensor([[0.0, 0.3, -0.2], [-1.0, 2.0, 0.1]])

    def softmax(row: list[float]) -> list[float]:
        z = sum(math.exp(x) for x in row)
        return [math.exp(x) / z for x in row]

    total = 0.0
    for tr, vr in zip(t.tolist(), v.tolist()):
        pt, pv = softmax(tr), softmax(vr)
        total += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, pv))
    assert semantic_kl(t, v).item() == pytest.approx(total / 2, rel=1e-5)
    assert semantic_kl(t, t).item() == pytest.approx(0.0, abs=1e-6)


def test_transfer_lets_samples_attend_to_each_other() -> None:
    torch.manual_seed(0)
    tr = CrossSampleTransfer(width=8, heads=2, ff=16, dropout=0.0).eval()
    x = torch.randn(3, 8)
    y = x.clone()
    y[1] += 1.0
    out_x, out_y = tr(x), tr(y)
    assert out_x.shape == (3, 8)
    assert not torch.allclose(out_x[0], out_y[0])  # sample 0 saw sample 1 change


def test_transfer_on_tokens_masks_padding_and_never_nans() -> None:
    torch.manual_seed(0)
    tr = CrossSampleTransfer(width=8, heads=2, ff=16, dropout=0.0).train()  # the training path
    tokens = torch.randn(3, 4, 8)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)  # position 3: all padding
    out = tr(tokens, mask)
    assert torch.isfinite(out).all() and torch.equal(out[:, 3], tokens[:, 3])
    changed_pad = tokens.clone()
    changed_pad[1, 2] += 5.0                       # sample 1 is padding at position 2
    assert torch.allclose(tr(changed_pad, mask)[0, 2], out[0, 2], atol=1e-6)
    changed_real = tokens.clone()
    changed_real[1, 1] += 5.0                      # sample 1 is real at position 1
    assert not torch.allclose(tr(changed_real, mask)[0, 1], out[0, 1])


def test_select_mixed_counts_and_halves() -> None:
    assert mixed_count(10, 0.25) == 3 and mixed_count(8, 0.0) == 0 and mixed_count(8, 1.0) == 8
    mixed, unmixed = select_mixed(8, True, 1.0)
    assert mixed.tolist() == list(range(8)) and unmixed.numel() == 0
    for seed in range(5):
        torch.manual_seed(seed)
        mixed, unmixed = select_mixed(8, True, 0.5)
        assert (mixed < 4).sum() == 2 and (mixed >= 4).sum() == 2
        assert sorted(mixed.tolist() + unmixed.tolist()) == list(range(8))
    mixed, _ = select_mixed(10, True, 0.3)          # 3 mixed: the odd one from the originals
    assert (mixed < 5).sum() == 2 and (mixed >= 5).sum() == 1
    # Without a doubled stack the draw is over all samples, so the halves are not forced equal.
    firsts = set()
    for seed in range(30):
        torch.manual_seed(seed)
        firsts.add(int((select_mixed(8, False, 0.5)[0] < 4).sum()))
    assert len(firsts) > 1


def test_mixup_and_mixed_ce_against_hand_values() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    out = mixup(x, torch.tensor([0, 2]), 0.25, torch.tensor([1, 0]))
    assert torch.allclose(out, torch.tensor([[0.25 * 1 + 0.75 * 4, 0.75 * 4], [0.25 * 4 + 0.75 * 1, 0.25 * 4]]))
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    y_a, y_b, lam = torch.tensor([0, 2]), torch.tensor([1, 1]), 0.3

    def ce(row: list[float], y: int) -> float:
        return -(row[y] - math.log(sum(math.exp(v) for v in row)))

    rows = logits.tolist()
    expect = lam * (ce(rows[0], 0) + ce(rows[1], 2)) / 2 + (1 - lam) * (ce(rows[0], 1) + ce(rows[1], 1)) / 2
    assert mixed_ce(logits, y_a, y_b, lam).item() == pytest.approx(expect, rel=1e-6)


def test_lambda_follows_the_global_seed() -> None:
    torch.manual_seed(7)
    a = [sample_lambda(1.0) for _ in range(3)]
    torch.manual_seed(7)
    assert a == [sample_lambda(1.0) for _ in range(3)] and all(0 < v < 1 for v in a)
    torch.manual_seed(7)
    assert abs(sum(sample_lambda(500.0) for _ in range(20)) / 20 - 0.5) < 0.05


# ---- the network ------------------------------------------------------------------------------
def _net(cfg: Config, dropout: float = 0.1) -> I2SRMNetwork:
    torch.manual_seed(1)
    return I2SRMNetwork(cfg, NUM_TAGS if cfg.task == "mner" else NUM_RELATIONS, tiny_bert(dropout), C)


@pytest.mark.parametrize("task", ["mner", "mre"])
@pytest.mark.parametrize("ablation", ABLATIONS)
def test_forward_backward_for_every_ablation(task: str, ablation: str) -> None:
    cfg = small_cfg(task, **{"i2srm.ablation": ablation})
    net = _net(cfg).train()
    batch = sample_batch(task)
    visual = sample_visual() if cfg.model.use_image else None
    out = net(batch, visual)
    assert torch.isfinite(out.loss) and set(out.parts) == {"ce", "mix", "kl"}
    expect = out.parts["ce"] + out.parts["mix"] + cfg.i2srm.kl_weight * out.parts["kl"]
    assert out.loss.item() == pytest.approx(expect.item(), rel=1e-6)
    out.loss.backward()
    head = net.emission if task == "mner" else net.classifier
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.parameters())
    # Every module is built in every row (paired initial weights); only the ones the row uses get gradients.
    assert net.prefix is not None and net.transfer is not None and net.kl_proj is not None
    grad = net.prefix.mlp[0].weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == cfg.model.use_image
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.transfer.parameters()) == cfg.i2srm.transfer
    uses_kl = cfg.model.use_image and cfg.i2srm.kl_weight > 0
    if uses_kl:
        assert out.parts["kl"] > 0 and net.kl_proj.weight.grad.abs().sum() > 0
    else:
        assert out.parts["kl"] == 0 and net.kl_proj.weight.grad is None
    trained = {id(p) for g in net.param_groups(cfg) for p in g["params"]}
    assert (id(net.kl_proj.weight) in trained) == uses_kl
    assert (id(net.transfer.layer.linear1.weight) in trained) == cfg.i2srm.transfer
    if not cfg.i2srm.mixup:
        assert out.parts["mix"] == 0
    net.eval()
    pred = net.predict(batch, visual)
    if task == "mner":
        assert [len(p) for p in pred] == batch["word_mask"].sum(1).tolist()
        assert all(0 <= t < NUM_TAGS for p in pred for t in p)
    else:
        assert len(pred) == B and all(0 <= r < NUM_RELATIONS for r in pred)


def test_no_objects_uses_only_the_whole_image() -> None:
    net = _net(small_cfg("mre", **{"i2srm.ablation": "no_objects"})).eval()
    visual = sample_visual()
    crops_changed = VisualFeatures(visual.cells.clone(), visual.logits, visual.mask)
    crops_changed.cells[:, 1:] += 3.0
    assert net(sample_batch("mre"), visual).loss.item() == net(sample_batch("mre"), crops_changed).loss.item()
    full = _net(small_cfg("mre")).eval()
    assert full(sample_batch("mre"), visual).loss.item() != full(sample_batch("mre"), crops_changed).loss.item()


@pytest.mark.parametrize("task", ["mner", "mre"])
@pytest.mark.parametrize("transfer", [False, True])
def test_delta_zero_is_exactly_the_unmixed_loss(task: str, transfer: bool) -> None:
    sets = {"i2srm.transfer": transfer, "i2srm.delta": 0.0}
    on = _net(small_cfg(task, **sets, **{"i2srm.mixup": True}))
    off = _net(small_cfg(task, **sets, **{"i2srm.mixup": False}))
    off.load_state_dict(on.state_dict())
    batch, visual = sample_batch(task), sample_visual()
    torch.manual_seed(5)
    a = on.train()(batch, visual)
    torch.manual_seed(5)
    b = off.train()(batch, visual)
    assert a.parts["mix"] == 0 and torch.equal(a.loss, b.loss)


def test_delta_one_mixes_every_sample() -> None:
    net = _net(small_cfg("mre", **{"i2srm.delta": 1.0, "i2srm.variant": "clean"})).train()
    out = net(sample_batch("mre"), sample_visual())
    assert out.parts["ce"] == 0 and out.parts["mix"] > 0
    net = _net(small_cfg("mre", **{"i2srm.delta": 1.0})).train()  # the reference keeps its clean loss at delta 1
    out = net(sample_batch("mre"), sample_visual())
    assert out.parts["ce"] > 0 and out.parts["mix"] > 0


@pytest.mark.parametrize("task", ["mner", "mre"])
def test_network_mixed_loss_is_lam_weighted(task: str) -> None:
    """Replay the network's draws (selection, lam, partners) and recompute the loss by hand."""
    cfg = small_cfg(task, **{"i2srm.transfer": False, "i2srm.delta": 0.5, "i2srm.kl_weight": 0.0,
                        "i2srm.variant": "clean"})  # the reference layout is replayed in test_fidelity.py
    net = _net(cfg, dropout=0.0).train()  # no dropout: the mixup draws are the only randomness
    batch, visual = sample_batch(task), sample_visual()
    y = batch["label"] if task == "mre" else batch["labels"]

    def draws(seed: int) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
        torch.manual_seed(seed)
        mixed, unmixed = select_mixed(B, False, 0.5)
        return mixed, unmixed, sample_lambda(cfg.i2srm.mixup_alpha), torch.randperm(len(mixed))

    # A seed whose partners carry other labels, so that a swapped lam would show.
    seed = next(s for s in range(100) if not torch.equal(y[draws(s)[0]], y[draws(s)[0]][draws(s)[3]]))
    mixed, unmixed, lam, perm = draws(seed)
    torch.manual_seed(seed)
    out = net(batch, visual)
    assert 0 < lam < 1 and len(mixed) == 2
    with torch.no_grad():
        hidden = net._encode(batch, visual)
        if task == "mre":
            rep = entity_pool(hidden, batch["head_mask"], batch["tail_mask"])
            y = batch["label"]
            x = lam * rep[mixed] + (1 - lam) * rep[mixed][perm]
            logp = F.log_softmax(net.classifier(x), -1)
            ya, yb = y[mixed], y[mixed][perm]
            expect_mix = -(lam * logp[range(2), ya] + (1 - lam) * logp[range(2), yb]).mean()
            expect_ce = -F.log_softmax(net.classifier(rep[unmixed]), -1)[range(2), y[unmixed]].mean()
        else:
            words, mask, y = net._crf_inputs(batch, hidden)  # sub-tokens under model.crf_span=reference
            em = net.emission(words) * mask.unsqueeze(-1)
            e = lam * em[mixed] + (1 - lam) * em[mixed][perm]
            ma, ya = mask[mixed], y[mixed]
            expect_mix = (lam * net.crf.nll(e, ya, ma).mean()
                          + (1 - lam) * net.crf.nll(e, ya[perm], ma[perm]).mean())
            expect_ce = net.crf.nll(em[unmixed], y[unmixed], mask[unmixed]).mean()
    assert out.parts["mix"].item() == pytest.approx(expect_mix.item(), rel=1e-5)
    assert out.parts["ce"].item() == pytest.approx(expect_ce.item(), rel=1e-5)


@pytest.mark.parametrize("task", ["mner", "mre"])
def test_network_kl_is_the_semantic_loss_of_the_text_and_image(task: str) -> None:
    net = _net(small_cfg(task, **{"i2srm.kl_weight": 0.7})).eval()
    batch, visual = sample_batch(task), sample_visual()
    out = net(batch, visual)
    with torch.no_grad():
        hidden = net._encode(batch, visual)
        if task == "mre":
            t = entity_pool(hidden, batch["head_mask"], batch["tail_mask"])
        else:
            am = batch["attention_mask"].float()
            t = torch.stack([hidden[b][am[b] > 0].mean(0) for b in range(B)])
        v = net.kl_proj(visual.logits)
    assert out.parts["kl"].item() == pytest.approx(semantic_kl(t, v).item(), rel=1e-5)
    assert out.parts["mix"] == 0  # evaluation: the plain path
    assert out.loss.item() == pytest.approx((out.parts["ce"] + 0.7 * out.parts["kl"]).item(), rel=1e-6)


def test_image_switched_on_needs_visual_features() -> None:
    net = _net(small_cfg("mre")).train()
    with pytest.raises(ValueError, match="model.use_image"):
        net(sample_batch("mre"), None)


def test_param_groups_rates_decay_and_backbone() -> None:
    cfg = small_cfg("mner", **{"train.lr": 2e-5, "train.head_lr": 5e-4, "train.prefix_lr": 7e-4, "train.crf_lr": 5e-4,
                          "train.weight_decay": 0.03, "i2srm.variant": "clean"})
    net = _net(cfg)
    frozen = ResNetFeatures(build_resnet("resnet18", "none"), prompt_len=4)
    groups = net.param_groups(cfg, backbone=frozen)
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(by_id) == len(list(net.parameters()))
    enc = net.encoder
    assert by_id[id(enc.embeddings.word_embeddings.weight)]["lr"] == 2e-5
    assert by_id[id(enc.embeddings.word_embeddings.weight)]["weight_decay"] == 0.03
    assert by_id[id(enc.embeddings.LayerNorm.weight)]["weight_decay"] == 0.0
    assert by_id[id(net.emission.bias)]["weight_decay"] == 0.0 and by_id[id(net.emission.bias)]["lr"] == 5e-4
    for p in (net.crf.transitions, net.kl_proj.weight, net.transfer.layer.linear1.weight):
        assert by_id[id(p)]["lr"] == 5e-4 and by_id[id(p)]["weight_decay"] == 0.03
    for p in (net.prefix.mlp[0].weight, net.prefix.gates[0].weight):  # the visual prefix has its own rate
        assert by_id[id(p)]["lr"] == 7e-4 and by_id[id(p)]["weight_decay"] == 0.03
    assert by_id[id(net.transfer.layer.norm1.weight)]["weight_decay"] == 0.0
    assert not any(id(p) in by_id for p in frozen.parameters())  # a frozen backbone is never optimised
    tuned = ResNetFeatures(build_resnet("resnet18", "none"), prompt_len=4, frozen=False)
    groups = net.param_groups(cfg, backbone=tuned)
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert by_id[id(tuned.net.conv1.weight)]["lr"] == 2e-5 and by_id[id(tuned.net.bn1.weight)]["weight_decay"] == 0
    torch.optim.AdamW(groups)  # the groups are what AdamW takes


def test_build_network_sizes_embeddings_to_the_tokenizer() -> None:
    cfg = build_config({"data.name": "synthetic-mre", "model.backbone": "resnet50"})
    tok = AutoTokenizer.from_pretrained(resolve_text_encoder(cfg.model.text_encoder))
    tok.add_special_tokens({"additional_special_tokens": ["<s>", "</s>", "<o>", "</o>"]})
    net = build_network(cfg, NUM_RELATIONS, tok)
    assert net.encoder.get_input_embeddings().num_embeddings == len(tok)
    assert net.prefix.mlp[0].in_features == 3840 and net.classifier.in_features == 2 * 384
