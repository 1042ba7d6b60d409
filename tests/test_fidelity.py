"""Each switch of ``i2srm.variant`` pinned: loss rows, prefix layout and head split, optimizer groups,
a fine-tuned backbone at evaluation, and paired initial weights across the ablation rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.config import ABLATIONS, VARIANTS, build_config
from model.fusion import arrange_cells, split_heads
from model.heads import entity_pool
from model.i2srm import reference_rows, sample_lambda
from model.network import I2SRMNetwork
from model.train import seed_everything
from tests.helpers import B, NUM_RELATIONS, NUM_TAGS, sample_batch, sample_visual, small_cfg, tiny_bert

N = 16  # a doubled stack of 2B rows, B = 8


# ---- item 1: which rows enter each loss --------------------------------------------------------
# (clean rows, mixed set, rows of the mixed set that are scored), as row indices of the stack.
REFERENCE_ROWS = {
    0.0: (list(range(12)), [], []),
    0.5: (list(range(12)), [0, 1, 2, 3, 12, 13, 14, 15], [0, 1, 2]),
    0.7: (list(range(12)), [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15], [0, 1, 2, 3]),
    1.0: (list(range(12)), list(range(16)), [0, 1, 2, 3, 4, 5]),
}


@pytest.mark.parametrize("delta", sorted(REFERENCE_ROWS))
def test_reference_loss_rows_are_the_authors_layout(delta: float) -> None:
    rows = reference_rows(N, delta)
    clean, mixed, scored = REFERENCE_ROWS[delta]
    assert rows.clean.tolist() == clean                  # first 80% of the stack, whatever delta is
    assert rows.mixed.tolist() == mixed                  # delta/2 of the stack from each end
    assert rows.mixed[rows.scored].tolist() == [mixed[i] for i in scored]  # first 40% of the mixed set


def _net(task: str, variant: str, delta: float, **sets: object) -> I2SRMNetwork:
    cfg = small_cfg(task, **{"i2srm.variant": variant, "i2srm.delta": delta, **sets})
    torch.manual_seed(0)
    return I2SRMNetwork(cfg, NUM_TAGS if task == "mner" else NUM_RELATIONS, tiny_bert(0.0), 960).train()


@pytest.mark.parametrize("delta", [0.0, 0.5, 0.7, 1.0])
def test_network_rows_under_each_variant(delta: float) -> None:
    ref = _net("mre", "reference", delta).loss_rows(N)
    clean, mixed, scored = REFERENCE_ROWS[delta]
    assert (ref.clean.tolist(), ref.mixed[ref.scored].tolist()) == (clean, [mixed[i] for i in scored])
    counts = {0.0: (16, 0), 0.5: (8, 8), 0.7: (5, 11), 1.0: (0, 16)}  # clean: round(delta * 16) rows mixed
    for seed in range(3):
        torch.manual_seed(seed)
        rows = _net("mre", "clean", delta).loss_rows(N)
        assert (len(rows.clean), len(rows.scored)) == counts[delta]
        assert not set(rows.clean.tolist()) & set(rows.mixed.tolist())  # a row is mixed or clean, never both
        assert sorted(rows.clean.tolist() + rows.mixed.tolist()) == list(range(N))


def test_plain_model_scores_every_row_in_both_variants() -> None:
    for variant in VARIANTS:
        net = _net("mre", variant, 0.7, **{"i2srm.ablation": "hvpnet"})
        rows = net.loss_rows(B)
        assert rows.clean.tolist() == list(range(B)) and rows.mixed.numel() == 0


@pytest.mark.parametrize("task", ["mner", "mre"])
def test_reference_loss_replayed_by_hand(task: str) -> None:
    """The network's clean and mixed losses equal CE / CRF NLL on the rows of the reference layout."""
    net = _net(task, "reference", 0.7, **{"i2srm.kl_weight": 0.0})
    batch, visual = sample_batch(task), sample_visual()
    torch.manual_seed(11)
    out = net(batch, visual)
    n = 2 * B
    rows = reference_rows(n, 0.7)
    torch.manual_seed(11)
    # replay the draws in the network's order: transfer dropout is the only randomness before lam and partners
    with torch.no_grad():
        hidden = net._encode(batch, visual)
        if task == "mre":
            rep = entity_pool(hidden, batch["head_mask"], batch["tail_mask"])
            stack = torch.cat([rep, net.transfer(rep)])
            y = torch.cat([batch["label"], batch["label"]])
        else:
            words, mask = net._words(batch, hidden), batch["word_mask"].bool()
            stack = torch.cat([words, net.transfer(words, mask)])
            y, mask = torch.cat([batch["labels"]] * 2), torch.cat([mask, mask])
        lam = sample_lambda(1.0)
        perm = torch.randperm(len(rows.mixed))
        m, s = rows.mixed, rows.scored
        if task == "mre":
            expect_ce = F.cross_entropy(net.classifier(stack[rows.clean]), y[rows.clean])
            x = (lam * stack[m] + (1 - lam) * stack[m][perm])[s]
            logits = net.classifier(x)
            expect_mix = lam * F.cross_entropy(logits, y[m][s]) + (1 - lam) * F.cross_entropy(logits, y[m][perm][s])
        else:
            em = net.emission(stack) * mask.unsqueeze(-1)
            expect_ce = net.crf.nll(em[rows.clean], y[rows.clean], mask[rows.clean]).mean()
            e = (lam * em[m] + (1 - lam) * em[m][perm])[s]
            expect_mix = (lam * net.crf.nll(e, y[m][s], mask[m][s]).mean()
                          + (1 - lam) * net.crf.nll(e, y[m][perm][s], mask[m][perm][s]).mean())
    assert len(rows.clean) == 6 and len(s) == 2  # 2B = 8 rows: clean 0-5; mixed set 0, 1, 5, 6, 7; scored 0, 1
    assert out.parts["ce"].item() == pytest.approx(expect_ce.item(), rel=1e-5)
    assert out.parts["mix"].item() == pytest.approx(expect_mix.item(), rel=1e-5)


# ---- item 2: prefix layout and head split as index maps ----------------------------------------
def test_reference_prefix_layout_is_the_channel_major_block_read_in_memory_order() -> None:
    p, c = 4, 6
    pooled = torch.arange(c * p).view(1, c, 2, 2)               # value = channel * 4 + cell
    cells = pooled.flatten(2).transpose(1, 2)                    # what the backbone gives: [1, P, C] cell-major
    assert cells[0, 1].tolist() == [1, 5, 9, 13, 17, 21]         # clean: vector 1 = cell 1 over every channel
    assert torch.equal(arrange_cells(cells, "clean"), cells)
    ref = arrange_cells(cells, "reference")
    assert ref[0].tolist() == [list(range(6 * v, 6 * v + 6)) for v in range(4)]  # vector v = values 6v..6v+5
    assert torch.equal(ref, pooled.reshape(1, p, c))             # the concatenated block viewed as [P, C]
    # vector 1, value j: channel (6 + j) // 4 at cell (6 + j) % 4
    assert [(int(x) // 4, int(x) % 4) for x in ref[0, 1]] == [(1, 2), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3)]


def test_head_split_index_maps() -> None:
    t, heads, hd = 4, 2, 3
    x = torch.arange(t * heads * hd).view(1, t, heads * hd)      # value = position * H + channel
    clean = split_heads(x, heads, "clean")
    ref = split_heads(x, heads, "reference")
    assert clean.shape == ref.shape == (1, heads, t, hd)
    assert clean[0, 1].tolist() == [[3, 4, 5], [9, 10, 11], [15, 16, 17], [21, 22, 23]]  # channels 3..5 of each
    assert ref[0, 0].tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]  # positions 0-1 cut in pieces
    assert ref[0, 1].tolist() == [[12, 13, 14], [15, 16, 17], [18, 19, 20], [21, 22, 23]]
    for h in range(heads):
        for p in range(t):
            assert ref[0, h, p].tolist() == list(range((h * t + p) * hd, (h * t + p + 1) * hd))
            assert clean[0, h, p].tolist() == list(range(p * heads * hd + h * hd, p * heads * hd + (h + 1) * hd))


# ---- item 4: optimizer groups ------------------------------------------------------------------
def test_reference_optimizer_groups() -> None:
    # the real-data recipes train the prefix at train.lr; the synthetic ones set 1e-3 for their short budget
    assert build_config({"data.name": "twitter2015", "data.dir": "."}).train.prefix_lr is None
    assert build_config({"data.name": "synthetic-mner"}).train.prefix_lr == 1e-3
    sets = {"train.lr": 2e-5, "train.head_lr": 5e-4, "train.prefix_lr": None}
    cfg = small_cfg("mner", **sets)
    assert cfg.train.max_grad_norm == 0 and cfg.train.decay_norm_bias and cfg.train.prefix_lr is None
    net = _net("mner", "reference", 0.7, **sets)
    by_id = {id(p): g for g in net.param_groups(cfg) for p in g["params"]}
    assert all(g["weight_decay"] == 0.01 for g in by_id.values())             # every weight decays
    assert by_id[id(net.encoder.embeddings.LayerNorm.weight)]["lr"] == 2e-5
    for p in (net.prefix.mlp[0].weight, net.prefix.gates[0].bias):             # prefix at the PLM's rate
        assert by_id[id(p)]["lr"] == 2e-5
    for p in (net.crf.transitions, net.emission.weight, net.emission.bias):   # HVPNeT's CRF rate
        assert by_id[id(p)]["lr"] == 5e-2
    for p in (net.kl_proj.weight, net.transfer.layer.linear1.weight):         # trained (the reference's MRE is not)
        assert by_id[id(p)]["lr"] == 5e-4
    clean = small_cfg("mner", **{"i2srm.variant": "clean"})
    assert (clean.train.max_grad_norm, clean.train.prefix_lr, clean.train.crf_lr) == (1.0, 1e-3, 1e-3)
    assert build_config({"data.name": "synthetic-mner", "i2srm.variant": "clean",
                         "train.crf_lr": 0.02}).train.crf_lr == 0.02             # a given key beats the variant


# ---- item 6: paired ablation rows; fine-tuned backbone at evaluation ---------------------------
@pytest.mark.parametrize("task", ["mner", "mre"])
def test_same_seed_same_initial_weights_in_every_ablation_row(task: str) -> None:
    states = {}
    for ablation in ABLATIONS:
        cfg = small_cfg(task, **{"i2srm.ablation": ablation})
        seed_everything(cfg.train.seed)
        net = I2SRMNetwork(cfg, NUM_TAGS if task == "mner" else NUM_RELATIONS, tiny_bert(0.0), 960)
        states[ablation] = {k: v for k, v in net.state_dict().items() if not k.startswith("encoder.")}
    full = states["full"]
    assert any(k.startswith(("emission", "classifier")) for k in full) and any(k.startswith("prefix") for k in full)
    for ablation, state in states.items():
        assert state.keys() == full.keys(), ablation
        for k, v in state.items():
            assert torch.equal(v, full[k]), (ablation, k)


def test_finetuned_backbone_evaluates_in_eval_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tiny_encoder: Path) -> None:
    import model.train as mt

    seen: dict[str, object] = {}
    make_visual = mt.make_visual

    def keep_backbone(cfg, data, device):  # type: ignore[no-untyped-def]
        fn, dim, backbone = make_visual(cfg, data, device)
        seen["backbone"] = backbone
        return fn, dim, backbone

    evaluate = mt.Evaluator.__call__

    def check(self, net, loader, visual_fn, device, amp):  # type: ignore[no-untyped-def]
        backbone = seen["backbone"]
        bns = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        before = [m.running_mean.clone() for m in bns]
        seen.setdefault("modes", []).append(any(m.training for m in backbone.modules()))
        out = evaluate(self, net, loader, visual_fn, device, amp)
        seen.setdefault("stats_kept", []).append(all(torch.equal(a, m.running_mean) for a, m in zip(before, bns)))
        return out

    monkeypatch.setattr(mt, "make_visual", keep_backbone)
    monkeypatch.setattr(mt.Evaluator, "__call__", check)
    cfg = build_config({"data.name": "synthetic-mre", "data.synthetic_size": 0.1, "model.backbone": "resnet18",
                        "model.image_size": 33, "data.max_len": 32, "train.epochs": 1, "train.progress": False,
                        "model.finetune_backbone": True, "train.save_checkpoint": False, "train.save_best": False,
                        "model.text_encoder": str(tiny_encoder)})  # the backbone is the point, not the encoder
    mt.train(cfg, tmp_path / "run")
    assert seen["backbone"] is not None
    assert seen["modes"] == [False, False] and seen["stats_kept"] == [True, True]  # dev and test
