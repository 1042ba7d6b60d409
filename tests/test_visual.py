"""The ResNet cell extractor: shapes per depth, frozen behaviour, weight loading, the online provider."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models._api

from model.visual import (OnlineVisualProvider, ResNetFeatures, VisualFeatures, build_resnet, channels_of,
                          grid_of)


def test_channels_and_grid() -> None:
    assert [channels_of(n) for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")] == \
        [960, 960, 3840, 3840, 3840]
    assert grid_of(4) == (2, 2) and grid_of(6) == (2, 3) and grid_of(9) == (3, 3) and grid_of(5) == (1, 5)
    with pytest.raises(ValueError, match="allowed: resnet18"):
        channels_of("resnet20")


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_cells_shape_at_64px(name: str) -> None:
    torch.manual_seed(0)
    feats = ResNetFeatures(build_resnet(name, "none"), prompt_len=4)
    cells, logits = feats(torch.randn(2, 3, 64, 64))
    assert cells.shape == (2, 4, channels_of(name)) and logits.shape == (2, 1000)
    assert feats.channels == channels_of(name)
    assert not cells.requires_grad  # frozen: no graph kept for the backbone


def test_cells_are_the_pooled_stages_and_logits_the_fc() -> None:
    torch.manual_seed(0)
    net = build_resnet("resnet18", "none").eval()
    feats = ResNetFeatures(net, prompt_len=6)  # a 2 x 3 grid
    x = torch.randn(1, 3, 64, 64)
    cells, logits = feats(x)
    assert torch.allclose(logits, net(x), atol=1e-5)
    h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    l1 = net.layer1(h)
    pooled = torch.nn.functional.adaptive_avg_pool2d(l1, (2, 3))  # [1, 64, 2, 3]
    # Cell 4 is row 1, column 1 of the grid; its first 64 channels come from layer1.
    assert torch.allclose(cells[0, 4, :64], pooled[0, :, 1, 1], atol=1e-5)
    assert cells.shape == (1, 6, 960)


def test_frozen_backbone_stays_in_eval_mode() -> None:
    frozen = ResNetFeatures(build_resnet("resnet18", "none"), prompt_len=4)
    parent = torch.nn.Sequential(frozen)
    parent.train()
    assert not frozen.net.training and not any(m.training for m in frozen.net.modules())
    assert not any(p.requires_grad for p in frozen.parameters())
    tuned = ResNetFeatures(build_resnet("resnet18", "none"), prompt_len=4, frozen=False)
    torch.nn.Sequential(tuned).train()
    assert tuned.net.training and all(p.requires_grad for p in tuned.parameters())


def test_local_weights_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = build_resnet("resnet18", "none")
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    loaded = build_resnet("resnet18", str(path))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(RuntimeError, match=r"r18.pth: does not match torchvision's resnet50"):
        build_resnet("resnet50", str(path))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a tensor file")
    with pytest.raises(RuntimeError, match="junk.pth: not a loadable tensor state dict"):
        build_resnet("resnet18", str(junk))
    with pytest.raises(FileNotFoundError, match="allowed: none, imagenet"):
        build_resnet("resnet18", str(tmp_path / "missing.pth"))


def test_imagenet_download_failure_names_the_way_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The download itself is torch.hub's; make it fail as it does offline, without touching the network.
    asked: list[str] = []

    def offline(url: str, *args, **kwargs):
        asked.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="model.backbone_weights=none"):
        build_resnet("resnet18", "imagenet")
    assert asked and asked[0].endswith(".pth")  # torchvision's own weights enum asked for the file


def _write_images(folder: Path, names: list[str]) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for name in names:
        pixels = torch.randint(0, 256, (48, 40, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / name)


def test_online_provider_pads_masks_and_matches_the_backbone(tmp_path: Path) -> None:
    from model.data.images import ImageLoader

    names = ["a.jpg", "a0.png", "a1.png", "a2.png", "a3.png", "b.jpg", "c.jpg", "c0.png"]
    _write_images(tmp_path, names)
    torch.manual_seed(0)
    backbone = ResNetFeatures(build_resnet("resnet18", "none"), prompt_len=4)
    loader = ImageLoader(64)
    provider = OnlineVisualProvider(backbone, loader, max_objects=3, use_objects=True)
    path = lambda n: str(tmp_path / n)  # noqa: E731
    keys = [[path(n) for n in names[:5]], [path("b.jpg")], [path("c.jpg"), path("c0.png")]]
    feats = provider(keys, torch.device("cpu"))
    assert isinstance(feats, VisualFeatures)
    assert feats.cells.shape == (3, 4, 4, 960) and feats.logits.shape == (3, 1000)
    assert feats.mask.tolist() == [[True] * 4, [True, False, False, False], [True, True, False, False]]
    assert torch.count_nonzero(feats.cells[1, 1:]) == 0  # absent crops: zero cells, masked
    ref_cells, ref_logits = backbone(torch.stack([loader.load(path("c.jpg")), loader.load(path("c0.png"))]))
    assert torch.allclose(feats.cells[2, :2], ref_cells, atol=1e-5)
    assert torch.allclose(feats.logits[2], ref_logits[0], atol=1e-4)
    assert loader.missing == 0

    whole_only = OnlineVisualProvider(backbone, loader, max_objects=3, use_objects=False)(keys, torch.device("cpu"))
    assert whole_only.cells.shape == (3, 1, 4, 960) and whole_only.mask.all()
    assert torch.allclose(whole_only.cells[:, 0], feats.cells[:, 0], atol=1e-5)
