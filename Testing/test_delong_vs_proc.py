"""Our DeLong AUC, CI and paired test against R's pROC (the reference implementation).

Runs Rscript once for all data sets (R start-up dominates); skipped with the reason when R or
pROC is missing (CI installs r-base-core + r-cran-proc)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from mediastinal_ai.evaluation import delong_test, roc_auc_ci

R_SCRIPT = r"""
suppressMessages(library(pROC))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
out <- NULL
for (s in unique(d$set)) {
  x <- d[d$set == s, ]
  ra <- roc(x$y, x$a, levels = c(0, 1), direction = "<", quiet = TRUE)
  rb <- roc(x$y, x$b, levels = c(0, 1), direction = "<", quiet = TRUE)
  ca <- as.numeric(ci.auc(ra, method = "delong", conf.level = 0.95))
  cb <- as.numeric(ci.auc(rb, method = "delong", conf.level = 0.95))
  t <- roc.test(ra, rb, method = "delong", paired = TRUE)
  out <- rbind(out, data.frame(set = s, auc_a = ca[2], lo_a = ca[1], hi_a = ca[3],
                               auc_b = cb[2], lo_b = cb[1], hi_b = cb[3],
                               z = as.numeric(t$statistic), p = t$p.value))
}
write.csv(out, args[2], row.names = FALSE)
"""


def _datasets() -> dict[str, pd.DataFrame]:
    sets = {}
    # hand-made, ties within and across classes
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0]
    a = [0.1, 0.4, 0.4, 0.35, 0.8, 0.4, 0.9, 0.55, 0.55, 0.2, 0.35, 0.7]
    b = [0.3, 0.3, 0.5, 0.1, 0.5, 0.9, 0.3, 0.6, 0.2, 0.5, 0.7, 0.4]
    sets["ties_small"] = pd.DataFrame({"y": y, "a": a, "b": b})
    rng = np.random.default_rng(20260101)
    # reader 1-5 confidence scale vs binary calls: massive ties
    y = rng.integers(0, 2, 60)
    sets["reader_scale_vs_calls"] = pd.DataFrame({
        "y": y, "a": np.clip(np.round(2.5 + 1.2 * y + rng.normal(0, 1, 60)), 1, 5),
        "b": (rng.random(60) < np.where(y == 1, 0.75, 0.3)).astype(float)})
    # unbalanced, correlated models
    y = (rng.random(150) < 0.25).astype(int)
    base = rng.normal(size=150) + 1.0 * y
    sets["unbalanced_correlated"] = pd.DataFrame({"y": y, "a": base + rng.normal(0, 0.5, 150),
                                                  "b": base + rng.normal(0, 1.0, 150)})
    # scores rounded to 1 decimal (ties) and a worse-than-chance model
    y = rng.integers(0, 2, 90)
    sets["rounded_and_inverse"] = pd.DataFrame({"y": y, "a": np.round(rng.normal(size=90) + 0.8 * y, 1),
                                                "b": np.round(rng.normal(size=90) - 0.4 * y, 1)})
    # random data sets of several sizes
    for n in (25, 80, 400):
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            y[0] = 1 - y[0]
        sets[f"random_{n}"] = pd.DataFrame({"y": y, "a": rng.normal(size=n) + rng.uniform(0, 2) * y,
                                            "b": rng.exponential(size=n) + rng.uniform(0, 1) * y})
    return sets


@pytest.fixture(scope="module")
def proc_results(tmp_path_factory):
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.skip("Rscript not installed (apt-get install r-base-core r-cran-proc)")
    d = tmp_path_factory.mktemp("proc")
    sets = _datasets()
    pd.concat([df.assign(set=name) for name, df in sets.items()]).to_csv(d / "data.csv", index=False,
                                                                          float_format="%.17g")
    (d / "delong.R").write_text(R_SCRIPT, encoding="utf-8")
    probe = subprocess.run([rscript, "-e", "library(pROC)"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"R package pROC not available: {probe.stderr.strip()[-200:]}")
    r = subprocess.run([rscript, str(d / "delong.R"), str(d / "data.csv"), str(d / "out.csv")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return sets, pd.read_csv(d / "out.csv").set_index("set")


def test_auc_and_delong_ci_equal_proc(proc_results):
    sets, ref = proc_results
    assert len(ref) == len(sets)
    for name, df in sets.items():
        for col in ("a", "b"):
            ours = roc_auc_ci(df["y"], df[col])
            exp = ref.loc[name]
            assert ours.auc == pytest.approx(exp[f"auc_{col}"], abs=1e-6), (name, col)
            assert ours.ci_low == pytest.approx(exp[f"lo_{col}"], abs=1e-6), (name, col)
            assert ours.ci_high == pytest.approx(exp[f"hi_{col}"], abs=1e-6), (name, col)


def test_paired_delong_equals_proc(proc_results):
    sets, ref = proc_results
    for name, df in sets.items():
        z, p, auc_a, auc_b = delong_test(df["y"], df["a"], df["b"])
        assert z == pytest.approx(ref.loc[name, "z"], abs=1e-6), name
        assert p == pytest.approx(ref.loc[name, "p"], abs=1e-6), name
        assert auc_a == pytest.approx(ref.loc[name, "auc_a"], abs=1e-6)
        assert auc_b == pytest.approx(ref.loc[name, "auc_b"], abs=1e-6)


def test_datasets_really_have_ties_and_differences():
    """Guard: the fixed sets keep exercising ties and a non-trivial p range."""
    sets = _datasets()
    assert sets["ties_small"]["a"].duplicated().any()
    assert sets["reader_scale_vs_calls"]["a"].nunique() <= 5
    ps = [delong_test(df["y"], df["a"], df["b"]).p for df in sets.values()]
    assert min(ps) < 0.05 < max(ps)
