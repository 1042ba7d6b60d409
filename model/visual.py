"""The image side of I2SRM: a torchvision ResNet turned into multi-level visual cells.

``ResNetFeatures`` maps images [N, 3, S, S] to ``cells`` [N, P, C] (layer1..layer4 each average-pooled
(``model.stage_pool``) to a grid of P = ``model.prompt_len`` cells, channels concatenated over the four
stages) and the global
``logits`` [N, 1000] (the ResNet's own fc output, as the reference uses for the semantic loss).
A frozen backbone is a pure function of the image, which is what lets a feature store cache it;
``VisualProvider`` is the interface both the online path here and such a store serve.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models
from torchvision.models import ResNet

from model.config import BACKBONES, LAYOUTS, ConfigError, prompt_grid

if TYPE_CHECKING:  # imported lazily at run time
    from model.data.images import ImageLoader

# Output channels of layer1..layer4: BasicBlock nets (18/34) and Bottleneck nets (50/101/152).
_STAGE_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
    "resnet152": (256, 512, 1024, 2048),
}
_WEIGHTS_ENUM = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "resnet152": "ResNet152_Weights",
}


class VisualFeatures(NamedTuple):
    cells: Tensor   # [B, 1 + K, P, C] multi-level pooled cells of the whole image then each crop slot
    logits: Tensor  # [B, G] global feature of the whole image (G = 1000, the ResNet's fc output)
    mask: Tensor    # [B, 1 + K] bool, True for the image and existing crops (an absent crop's slot is False, whether
    #                 it holds zero cells or, under model.empty_crops=reference, the zero image's features)


class VisualProvider(Protocol):
    def __call__(self, image_keys: list[list[str]], device: torch.device) -> VisualFeatures: ...


def _check_name(name: str) -> None:
    if name not in BACKBONES:
        raise ValueError(f"'model.backbone' is {name!r}; allowed: {', '.join(BACKBONES)}.")


def channels_of(name: str) -> int:
    """C, the width of one visual cell of backbone ``name`` (960 for resnet18/34, 3840 for resnet50+)."""
    _check_name(name)
    return sum(_STAGE_CHANNELS[name])


def grid_of(prompt_len: int) -> tuple[int, int]:
    """The most square grid h x w (h <= w) with h * w == prompt_len: 4 -> (2, 2), 6 -> (2, 3), 5 -> (1, 5)."""
    try:
        return prompt_grid(prompt_len)
    except ConfigError as e:
        raise ValueError(str(e)) from None


def imagenet_weights(name: str) -> models.WeightsEnum:
    """torchvision's ImageNet weights of ResNet ``name`` (``IMAGENET1K_V1``, the weights the reference loads)."""
    _check_name(name)
    return getattr(models, _WEIGHTS_ENUM[name]).IMAGENET1K_V1


def build_resnet(name: str, weights: str = "none") -> ResNet:
    """A torchvision ResNet of depth ``name`` with ``weights``: ``none``, ``imagenet`` or a state-dict file."""
    _check_name(name)
    net: ResNet = getattr(models, name)(weights=None)
    if weights == "none":
        return net
    if weights == "imagenet":
        enum = imagenet_weights(name)
        try:
            state = enum.get_state_dict(progress=False, check_hash=True)
        except Exception as e:  # no network, proxy, corrupt download: all end the same way for the user
            raise RuntimeError(
                f"model.backbone_weights=imagenet: could not download the ImageNet weights of {name} from {enum.url} "
                f"({type(e).__name__}: {' '.join(str(e).split())}); set model.backbone_weights=PATH (a local "
                f"state-dict file, e.g. a copy of {Path(enum.url).name}) or model.backbone_weights=none (random init), "
                f"or make the host reachable.") from e
        net.load_state_dict(state)
        return net
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model.backbone_weights={weights!r}: no such file; "
                                f"allowed: none, imagenet or the path of a {name} state-dict file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{path}: not a loadable tensor state dict ({type(e).__name__}: {e}); "
                           f"model.backbone_weights expects a torch.save'd {name} state_dict.") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint that wraps the weights
    if not isinstance(state, dict):
        raise RuntimeError(f"{path}: holds a {type(state).__name__}, expected a {name} state_dict (a dict).")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise RuntimeError(f"{path}: does not match torchvision's {name} (model.backbone={name}): "
                           f"{' '.join(first[:3])[:500]}. Check model.backbone against the file.") from None
    return net


def pool_stage(x: Tensor, grid: tuple[int, int], mode: str) -> Tensor:
    """A stage's map [N, C, h, w] pooled to [N, C, gh, gw] (``model.stage_pool``).

    ``clean``: ``adaptive_avg_pool2d``, whose windows cover the whole map (overlapping where a side does not
    divide). ``reference``: non-overlapping windows of ⌊h/gh⌋ x ⌊w/gw⌋ cells from the top-left corner, the
    remainder rows and columns dropped; for a 2x2 grid this is HVPNeT's ``AvgPool2d(ft // 2, stride=ft // 2)``
    wherever that gives two windows per side (every side but 1 and 3).
    """
    if mode == "clean":
        return F.adaptive_avg_pool2d(x, grid)
    if mode != "reference":
        raise ValueError(f"'model.stage_pool' is {mode!r}; allowed: {', '.join(LAYOUTS)}.")
    (gh, gw), (h, w) = grid, x.shape[-2:]
    kh, kw = h // gh, w // gw
    if kh == 0 or kw == 0:
        raise ValueError(f"a {h}x{w} stage map is smaller than the {gh}x{gw} prompt grid: model.stage_pool=reference "
                         "needs a larger model.image_size (or model.stage_pool=clean).")
    return F.avg_pool2d(x[..., : gh * kh, : gw * kw], (kh, kw), stride=(kh, kw))


class ResNetFeatures(nn.Module):
    """A ResNet as a multi-level cell extractor: images [N, 3, S, S] -> (cells [N, P, C], logits [N, 1000]).

    ``pool`` is ``model.stage_pool``; ``batch_stats`` (``model.backbone_bn=train``) lets a frozen backbone's
    BatchNorm follow the parent's training mode (batch statistics, running statistics updated) instead of
    staying in eval mode.
    """

    def __init__(self, resnet: ResNet, prompt_len: int, frozen: bool = True, pool: str = "clean",
                 batch_stats: bool = False) -> None:
        super().__init__()
        if pool not in LAYOUTS:
            raise ValueError(f"'model.stage_pool' is {pool!r}; allowed: {', '.join(LAYOUTS)}.")
        self.net = resnet
        self.prompt_len = prompt_len
        self.grid = grid_of(prompt_len)
        self.frozen = frozen
        self.pool = pool
        self.batch_stats = batch_stats
        self.channels = sum(_out_channels(layer)
                            for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4))
        if frozen:
            self.net.requires_grad_(False)
            self.net.eval()

    def train(self, mode: bool = True) -> "ResNetFeatures":
        # A frozen backbone keeps BatchNorm running statistics fixed and features a pure function of
        # the image (so caching is exact) even when a parent module switches to training mode, unless
        # model.backbone_bn=train asks for the authors' batch statistics.
        super().train(mode)
        if self.frozen and not self.batch_stats:
            self.net.eval()
        return self

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(images))))  # [N, 64, S/4, S/4]
        cells = []
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            x = layer(x)                                               # [N, C_i, h_i, w_i]
            pooled = pool_stage(x, self.grid, self.pool)               # [N, C_i, gh, gw]
            cells.append(pooled.flatten(2).transpose(1, 2))            # [N, P, C_i]
        logits = n.fc(torch.flatten(n.avgpool(x), 1))                  # [N, 1000]
        return torch.cat(cells, dim=-1), logits                        # [N, P, C], [N, 1000]


def _out_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    last_bn = getattr(block, "bn3", None) or block.bn2
    assert isinstance(last_bn, nn.BatchNorm2d)
    return int(last_bn.num_features)


class OnlineVisualProvider:
    """Loads the images of a batch and runs the backbone on them now (no cache).

    ``zero_image`` (``model.empty_crops=reference``): an absent crop's slot holds the zero image (``blank``) run
    through the backbone; otherwise zero cells. Either way its mask entry is False (the prefix decides what it does
    with the slot, ``VisualPrefix``).
    A backbone using batch statistics (``model.backbone_bn=train`` while training) sees the whole images and each
    crop slot as separate batches, as the authors' ``ImageModel`` runs them; otherwise all in one forward.
    """

    def __init__(self, backbone: ResNetFeatures, loader: "ImageLoader", max_objects: int,
                 use_objects: bool, zero_image: bool = False) -> None:
        self.backbone = backbone
        self.loader = loader
        self.max_objects = max_objects if use_objects else 0
        self.use_objects = use_objects
        self.zero_image = zero_image

    def _images(self, image_keys: list[list[str]]) -> tuple[Tensor, Tensor, Tensor]:
        """The images run through the backbone, flattened slot-major within each sample [N, 3, S, S], the slots
        they fill [B, 1 + K] (absent crops too, as the zero image, under ``zero_image``) and the slot mask
        [B, 1 + K] (the image and existing crops)."""
        from model.data.images import blank

        slots = 1 + self.max_objects
        images: list[Tensor] = []
        mask = torch.zeros(len(image_keys), slots, dtype=torch.bool)
        for b, keys in enumerate(image_keys):
            if not keys:
                raise ValueError(f"sample {b} of the batch has no image key; the whole image must come first.")
            present = keys[:slots]
            images.extend(self.loader.load(k) for k in present)            # each [3, S, S]
            mask[b, : len(present)] = True
            if self.zero_image:
                images.extend(blank(self.loader.image_size) for _ in range(slots - len(present)))
        filled = torch.ones_like(mask) if self.zero_image else mask
        return torch.stack(images), filled, mask

    def _run(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The backbone on ``images`` (rows in the order of ``mask``'s True entries): cells, logits."""
        net = self.backbone
        if not (net.batch_stats and net.net.training):
            return net(images)                                             # [N_real, P, C], [N_real, 1000]
        # One forward per slot (whole images, then crop slot 1, 2, ...), each with its own batch statistics.
        slot_of = mask.nonzero()[:, 1]                                     # [N_real] slot of each row
        cells: Tensor | None = None
        logits: Tensor | None = None
        for slot in slot_of.unique().tolist():
            rows = (slot_of == slot).nonzero().flatten().to(images.device)
            c, g = net(images.index_select(0, rows))
            cells = c.new_zeros(len(images), *c.shape[1:]) if cells is None else cells
            logits = g.new_zeros(len(images), g.shape[-1]) if logits is None else logits
            cells, logits = cells.index_copy(0, rows, c), logits.index_copy(0, rows, g)
        assert cells is not None and logits is not None
        return cells, logits

    def __call__(self, image_keys: list[list[str]], device: torch.device) -> VisualFeatures:
        images, filled, mask = self._images(image_keys)
        device = torch.device(device)
        if next(self.backbone.parameters()).device != device:
            self.backbone.to(device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone.frozen):
            real_cells, real_logits = self._run(images.to(device), filled)  # [N, P, C], [N, 1000]
        b, slots = mask.shape
        # Where each image goes, from the CPU mask (no device sync). Under model.empty_crops=clean an absent
        # crop's slot stays zero cells; under reference it holds the zero image's features.
        rows = filled.flatten().nonzero().flatten().to(device, non_blocking=True)           # [N] into B * (1 + K)
        cells = real_cells.new_zeros(b * slots, *real_cells.shape[1:]).index_copy(0, rows, real_cells)
        logits = real_logits.new_zeros(b * slots, real_logits.shape[-1]).index_copy(0, rows, real_logits)
        return VisualFeatures(cells=cells.view(b, slots, *real_cells.shape[1:]),      # [B, 1 + K, P, C]
                              logits=logits.view(b, slots, -1)[:, 0],               # whole image [B, 1000]
                              mask=mask.to(device, non_blocking=True))
