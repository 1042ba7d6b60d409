"""Test session set-up: offline, no telemetry, and a private cache so tests never touch ~/.cache; the
fixtures several test modules share (their plain helpers are in ``tests/helpers.py``)."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from study.local_ray import keep_local_ray_on_loopback  # noqa: E402

# The session's Ray instance (fixture ``local_ray``) listens on 127.0.0.1 only, as a study's own does: the setting
# is read when ray is first imported, which collecting the test modules does. Subprocesses started through
# ``study.local_ray.child_env`` (the tests' ``ray_cluster.study_env``) drop it again.
keep_local_ray_on_loopback(None, "127.0.0.1")
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


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray instance in this pytest process (each pytest-xdist worker has its own) for the whole
    session, started the way a study starts its own (``study.local_ray.init_ray``). The tests that run a study
    in this process (``ray_cluster.run_here``) or drive Ray Tune directly share it: a study finds Ray started and
    leaves it running. The tests whose feature is the study's own process (its start, its Ray instance, a driver
    killed and resumed, faults, clusters) run ``study/run.py`` as a subprocess instead.

    Its trial processes may run the trainer's stand-in (``train.simulate_seconds``, ``model/simulate.py``): the
    permission (``I2SRM_ALLOW_SIMULATE=1``) is set in this process before Ray starts, so the driver's pre-flight
    and the trial processes see it. Tests of the refusal without it remove it themselves."""
    from model.config import ALLOW_SIMULATE_ENV
    from study.local_ray import init_ray, stop_ray

    os.environ[ALLOW_SIMULATE_ENV] = "1"
    started = init_ray(None)
    yield
    if started:
        stop_ray()
