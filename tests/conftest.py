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
from hypothesis import HealthCheck, settings

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

# The property tests' profiles (tests/test_generated_input.py; hypothesis is in the test extra). ci (the default):
# a fixed seed (derandomized), 600 examples per test, a few seconds; long: 10,000 per test, for a local run
# (HYPOTHESIS_PROFILE=long). Neither keeps an example database (nothing written).
_QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=600, derandomize=True, deadline=None, database=None,
                          suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("long", max_examples=10_000, derandomize=True, deadline=None, database=None,
                          suppress_health_check=_QUIET, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer, 32-wide BERT with the offline MiniLM tokenizer, saved once per session: the
    ``model.text_encoder`` of tests where the shipped MiniLM is not the point."""
    from tests.helpers import save_tiny_encoder

    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))
