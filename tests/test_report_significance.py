"""Significance against the reference (``study/reports/significance.py``): each statistic against scipy's own
function on the same arrays, Holm against a hand-computed example, pairing by seed, and the columns,
markers and digits a study's reports show (stored studies written in the records' layout)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pypdf import PdfReader
from scipy import stats

from study.reports import build_reports
from study.reports.significance import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, holm, key_tests, pair_trials,
                                        paired_test, stars, with_holm)
from study.reports.tables import diff_cells
from study.reports.load import load_study
from study.reports.values import display_values, fmt_display, fmt_mean_std, fmt_p
from tests.helpers import write_study

X = [81.0, 83.5, 80.2, 84.1, 82.0]
Y = [79.5, 80.0, 80.1, 81.2, 79.9]


def test_paired_statistics_equal_scipys_on_the_same_arrays() -> None:
    p = paired_test(X, Y)
    d = np.subtract(X, Y)
    assert p.n_paired == 5 and p.diff == pytest.approx(d.mean())
    assert p.p_value == pytest.approx(stats.ttest_rel(X, Y).pvalue, rel=1e-12)
    assert p.effect_size == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)  # Cohen's d_z
    ci = stats.bootstrap((d,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, method="BCa",
                         rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    assert (p.diff_ci_low, p.diff_ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert p.diff_ci_low < p.diff < p.diff_ci_high
    # the sign-flip test, enumerated by hand: all 2**5 sign patterns of d, |mean| at least the observed one
    flips = [abs(np.mean(d * s)) for s in itertools.product((1, -1), repeat=5)]
    exact = sum(f >= abs(d.mean()) - 1e-12 for f in flips) / len(flips)
    assert p.p_signflip == pytest.approx(exact) and exact == 2 / 32  # every difference is positive: the floor
    assert p.p_holm is None  # a family adjusts, one test does not


def test_below_three_pairs_a_difference_but_no_test_no_stars_no_interval() -> None:
    # Two differences that happen to agree (-1.43, -1.45): a t-test with one degree of freedom would give
    # p = 0.022 and a "95% CI" that is the range of the two values. Neither is given, with the reason.
    two = paired_test([70.0, 72.0], [71.43, 73.45])
    assert two.n_paired == 2 and two.diff == pytest.approx(-1.44)
    assert stats.ttest_rel([70.0, 72.0], [71.43, 73.45]).pvalue < 0.05  # what would have been starred
    assert (two.p_value, two.p_signflip, two.effect_size, two.diff_ci_low, two.diff_ci_high) == (None,) * 5
    assert two.stars == "" and with_holm([two])[0].p_holm is None and two.note == "2 pairs: no test below 3"
    diff, ci, dz, p_t, _, p_holm = diff_cells(two)
    assert diff == "-1.44" and ci == "n/a (2 pairs: no test below 3)" and (dz, p_t, p_holm) == ("n/a",) * 3
    one = paired_test([80.0], [79.0])
    assert one.n_paired == 1 and one.diff == 1.0 and one.p_value is None and one.note == "1 pair: no test below 3"
    three = paired_test([80.0, 82.0, 81.0], [79.0, 80.5, 80.2])
    assert three.note == "" and three.p_value == pytest.approx(
        stats.ttest_rel([80.0, 82.0, 81.0], [79.0, 80.5, 80.2]).pvalue)
    assert three.diff_ci_low is not None and three.p_signflip == pytest.approx(0.25)  # 2 / 2**3
    same = paired_test([80.0, 81.0, 82.0], [80.0, 81.0, 82.0])  # identical runs: nothing to test
    assert same.p_value is None and same.effect_size is None and same.diff == 0.0


def test_holm_against_a_hand_computed_example() -> None:
    # m = 4 tests, sorted 0.01, 0.02, 0.03, 0.04 -> 4*0.01 = 0.04, 3*0.02 = 0.06, 2*0.03 = 0.06 (max with
    # the previous: 0.06), 1*0.04 = 0.04 -> 0.06 (monotone); None is not a test and does not count in m
    assert holm([0.03, None, 0.01, 0.04, 0.02]) == pytest.approx([0.06, None, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == [] and holm([None]) == [None]
    assert (stars(0.0004), stars(0.004), stars(0.04), stars(0.05), stars(None)) == ("***", "**", "*", "", "")


def test_values_shown_to_meaningful_digits_and_no_std_of_one_seed() -> None:
    assert fmt_display(0.5488135039273248) == "0.5488" and fmt_display(1.0) == "1"
    assert fmt_display("resnet18") == "resnet18"
    assert display_values([0.54881, 0.54883]) == {"0.54881": "0.54881", "0.54883": "0.54883"}  # kept apart
    assert fmt_mean_std(80.0, math.nan) == "80.00 ± n/a" and fmt_mean_std(80.0, 1.234) == "80.00 ± 1.23"
    assert (fmt_p(0.0001), fmt_p(0.01234), fmt_p(None)) == ("<0.001", "0.012", "n/a")


# ----------------------------------------------------------------------------- a study against its reference

DELTAS = [0.0, 0.5488135039273248, 0.7]
TEST = {  # test F1 per seed 1..4; 0.0 is far above the reference 0.7, 0.5488... a little below
    0.0: [90.0, 91.0, 89.5, 90.5],
    0.5488135039273248: [79.0, 80.5, 80.0, 81.0],
    0.7: [80.0, 81.0, 80.5, 81.5],
}


@pytest.fixture(scope="module")
def delta_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    space = {"study": "delta", "search": {"i2srm.delta": {"grid": DELTAS}}, "sampler": "grid", "seeds": [1, 2, 3, 4],
             "reports": ["summary", "sensitivity"], "reference": {"i2srm.delta": 0.7}}
    trials = [{"trial_id": f"t_{d}_{s}", "status": "completed", "seed": s, "params": {"i2srm.delta": d},
               "dev": [t + 1.0], "test": [t]} for d, xs in TEST.items() for s, t in enumerate(xs, 1)
              if not (d == 0.5488135039273248 and s == 4)]  # that value missed seed 4: 3 pairs
    folder = write_study(tmp_path_factory.mktemp("results") / "delta", "delta", space, trials)
    build_reports(folder)
    return folder


def test_summary_columns_equal_scipy_on_the_seeds_both_ran(delta_study: Path) -> None:
    rows = pd.read_csv(delta_study / "summary.csv")
    assert list(rows.columns[-11:]) == ["reference", "n_paired", "test_f1_diff", "diff_ci_low", "diff_ci_high",
                                        "effect_size", "p_value", "p_signflip", "p_holm", "interval_halfwidth",
                                        "resolved"]
    by = {round(r["i2srm.delta"], 4): r for _, r in rows.iterrows()}
    ref = by[0.7]
    assert bool(ref["reference"]) and all(pd.isna(ref[c]) for c in ("n_paired", "p_value", "p_holm", "effect_size"))
    ps = []
    for delta, n in ((0.0, 4), (0.5488, 3)):
        x = [TEST[d][s] for d in TEST if round(d, 4) == delta for s in range(n)]
        y = TEST[0.7][:n]
        r = by[delta]
        d = np.subtract(x, y)
        assert not r["reference"] and r["n_paired"] == n
        assert r["test_f1_diff"] == pytest.approx(d.mean(), abs=1e-4)
        assert r["p_value"] == pytest.approx(stats.ttest_rel(x, y).pvalue, rel=1e-5)
        assert r["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-5)
        ci = stats.bootstrap((d,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, method="BCa",
                             rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
        assert (r["diff_ci_low"], r["diff_ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-4)
        ps.append(stats.ttest_rel(x, y).pvalue)
    lo, hi = sorted(ps)
    assert sorted([by[0.0]["p_holm"], by[0.5488]["p_holm"]]) == pytest.approx([2 * lo, max(2 * lo, hi)], rel=1e-5)


def test_pairing_is_by_seed_whatever_the_trial_order(delta_study: Path) -> None:
    study = load_study(delta_study)
    groups, tests, reference = key_tests(study, "i2srm.delta")
    assert reference is not None and reference.values == (0.7,)
    short = next(g for g in groups if g.values[0] == 0.5488135039273248)
    x, y = pair_trials(short.trials[::-1], reference.trials, ())
    assert x == TEST[0.5488135039273248][:3] and y == TEST[0.7][:3]  # seed 4 of the reference has no partner
    assert [t.n_paired if t else None for t in tests] == [4, 3, None]


def test_markers_on_the_figure_and_digits_in_the_report(delta_study: Path) -> None:
    text = "".join(page.extract_text() for page in PdfReader(delta_study / "sensitivity_i2srm.delta.pdf").pages)
    assert "p(Holm) < 0.05 vs reference" in text  # the legend says what the stars mean
    assert "***" in text  # delta 0: ten points above the reference in every seed
    report = (delta_study / "REPORT.md").read_text(encoding="utf-8")
    assert "0.5488135039273248" not in report.replace("i2srm.delta=0.5488135039273248", "")
    assert "| 0.5488 | 3 |" in report and r"| 0 | 4 | +9.50\*\*\* |" in report  # stars escaped for Markdown
    assert "## Significance against the reference" in report and "### `i2srm.delta` (reference 0.7)" in report


def test_no_markers_without_a_difference(tmp_path: Path) -> None:
    space = {"study": "flat", "search": {"i2srm.delta": {"grid": [0.0, 0.7]}}, "sampler": "grid", "seeds": [1, 2, 3],
             "reports": ["summary", "sensitivity"]}
    trials = [{"trial_id": f"t_{d}_{s}", "status": "completed", "seed": s, "params": {"i2srm.delta": d},
               "dev": [t], "test": [t]} for d in (0.0, 0.7) for s, t in enumerate([80.0 + d, 70.0, 90.0 - d], 1)]
    folder = write_study(tmp_path / "flat", "flat", space, trials)
    build_reports(folder)
    text = "".join(page.extract_text() for page in PdfReader(folder / "sensitivity_i2srm.delta.pdf").pages)
    assert "*" not in text and "Holm" not in text
    row = pd.read_csv(folder / "summary.csv").iloc[0]
    assert row["p_holm"] == pytest.approx(1.0) and row["n_paired"] == 3  # diffs -0.7, 0, +0.7: mean 0


def test_one_seed_has_no_std_anywhere(tmp_path: Path) -> None:
    space = {"study": "one", "search": {"i2srm.delta": {"grid": [0.0, 0.7]}}, "sampler": "grid", "seeds": [1],
             "reports": ["summary"]}
    trials = [{"trial_id": f"t{d}", "status": "completed", "seed": 1, "params": {"i2srm.delta": d},
               "dev": [70.0], "test": [70.0 + d]} for d in (0.0, 0.7)]
    folder = write_study(tmp_path / "one", "one", space, trials)
    build_reports(folder)
    rows = pd.read_csv(folder / "summary.csv")
    assert rows["test_f1_std"].isna().all() and rows["p_value"].isna().all()
    assert list(rows["n_paired"].fillna(-1)) == [1, -1]  # one pair: counted, not tested
    report = (folder / "REPORT.md").read_text(encoding="utf-8")
    assert "± n/a" in report and "± 0.00" not in report
