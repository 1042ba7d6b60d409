"""Test session set-up: offline, no telemetry, and a private cache so tests never touch ~/.cache; the
fixtures several test modules share (their plain helpers are in ``tests/helpers.py``)."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "I2SRM_CACHE" not in os.environ:  # the first pytest process makes it; its workers and subprocesses inherit it
    os.environ["I2SRM_CACHE"] = tempfile.mkdtemp(prefix="i2srm-test-cache-")
    atexit.register(shutil.rmtree, os.environ["I2SRM_CACHE"], ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer, 32-wide BERT with the offline MiniLM tokenizer, saved once per session: the
    ``model.text_encoder`` of tests where the shipped MiniLM is not the point."""
    from tests.helpers import save_tiny_encoder

    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))
