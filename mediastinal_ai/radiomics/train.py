"""Training and honest evaluation of the radiomics WHO-risk model and its comparators.

Design (see docs/radiomics.md):
* positive class = high risk (B2/B3/thymic carcinoma), negative = low risk (A/AB/B1);
* held-out test set = manifest rows with ``split == test`` (else a stratified random 25%);
  the rest (train + val) is the training set;
* every model is the same leak-free pipeline (:func:`.pipeline.build_pipeline`) with a
  different last step; on the training set we report 5-fold stratified CV AUC (each fold
  refits ICC filter, correlation filter, scaler, LASSO, SMOTE and classifier), then fit on
  the whole training set and report held-out test AUC, accuracy, sensitivity, specificity,
  PPV, NPV with 95% CIs at threshold 0.5;
* the saved model is the SVM pipeline fitted on the training set — exactly the model whose
  test metrics the card reports.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import ProgressCallback, report
from .pipeline import CLASSIFIER_NAMES, CLASSIFIERS, build_pipeline, selected_features, selection_summary
from .stats import auc_ci, binary_metrics

log = logging.getLogger(__name__)
LABELS = {"low": 0, "high": 1}


@dataclass
class TrainResult:
    pipelines: dict[str, Any]
    metrics: dict[str, Any]
    train_ids: list[str]
    test_ids: list[str]
    input_features: list[str]
    selected: list[str]
    selection: dict[str, Any]
    icc: dict[str, float] = field(default_factory=dict)
    # per classifier: out-of-fold CV probabilities on the training cases (train_ids order) and
    # held-out test probabilities (test_ids order): the prediction tables for --threshold-from
    cv_predictions: dict[str, np.ndarray] = field(default_factory=dict)
    test_predictions: dict[str, np.ndarray] = field(default_factory=dict)


def split_readers(table: Any) -> tuple[Any, Any | None]:
    """Feature table → (reader-1 DataFrame, reader-2 DataFrame or None), indexed by case id."""
    feats = [c for c in table.columns if c not in ("case_id", "reader")]
    r1 = table[table["reader"] == "1"].set_index("case_id")[feats]
    r2 = table[table["reader"] == "2"].set_index("case_id")[feats]
    if r1.index.has_duplicates:
        raise InputError("feature table has duplicate reader-1 rows for some case")
    return r1, (r2 if len(r2) else None)


def repeat_reader(table: Any) -> Any | None:
    """Reader 1's repeat outline (``reader == "1r"``, intra-observer ICC), or None."""
    feats = [c for c in table.columns if c not in ("case_id", "reader")]
    r = table[table["reader"].astype(str) == "1r"].set_index("case_id")[feats]
    return r if len(r) else None


def choose_split(case_ids: list[str], y: np.ndarray, splits: dict[str, str | None], test_fraction: float,
                 seed: int) -> tuple[list[str], list[str]]:
    test = [c for c in case_ids if (splits.get(c) or "").lower() == "test"]
    if test and 0 < len(test) < len(case_ids):
        return [c for c in case_ids if c not in set(test)], test
    from sklearn.model_selection import train_test_split

    tr, te = train_test_split(case_ids, test_size=test_fraction, stratify=y, random_state=seed)
    return list(tr), list(te)


def train_models(table: Any, labels: dict[str, str], splits: dict[str, str | None] | None = None, *,
                 classifiers: tuple[str, ...] = CLASSIFIERS, cv_folds: int = 5, test_fraction: float = 0.25,
                 seed: int = 0, icc_threshold: float = 0.85, corr_threshold: float = 0.9,
                 max_features: int | None = None, progress: ProgressCallback | None = None,
                 icc_kind: str = "2,1") -> TrainResult:
    """Fit and evaluate every classifier; ``labels`` maps case id → "low"/"high"."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    r1, r2 = split_readers(table)
    ids = [c for c in r1.index if labels.get(c) in LABELS]
    if len(ids) < 20:
        raise InputError(f"need at least 20 cases with a WHO risk label (low/high) and features; have {len(ids)}")
    y_all = np.array([LABELS[labels[c]] for c in ids])
    if min((y_all == 0).sum(), (y_all == 1).sum()) < 8:
        raise InputError("need at least 8 low-risk and 8 high-risk cases")
    train_ids, test_ids = choose_split(ids, y_all, splits or {}, test_fraction, seed)
    y_of = dict(zip(ids, y_all))
    Xtr, ytr = r1.loc[train_ids], np.array([y_of[c] for c in train_ids])
    Xte, yte = r1.loc[test_ids], np.array([y_of[c] for c in test_ids])
    reader2_train = r2.loc[r2.index.intersection(train_ids)] if r2 is not None else None
    r1r = repeat_reader(table)
    repeat_train = r1r.loc[r1r.index.intersection(train_ids)] if r1r is not None else None
    if repeat_train is not None and len(repeat_train) < 3:
        log.warning("only %d training cases have a repeat outline: intra-observer ICC skipped", len(repeat_train))
        repeat_train = None
    metrics_icc = {"inter_observer_cases": 0 if reader2_train is None else int(len(reader2_train)),
                   "intra_observer_cases": 0 if repeat_train is None else int(len(repeat_train)), "form": icc_kind}
    metrics: dict[str, Any] = {"positive_class": "high", "threshold": 0.5,
                               "n_train": len(train_ids), "n_test": len(test_ids),
                               "n_train_high": int(ytr.sum()), "n_test_high": int(yte.sum()), "models": {},
                               "icc_cases": metrics_icc}
    pipes: dict[str, Any] = {}
    cv_preds: dict[str, np.ndarray] = {}
    test_preds: dict[str, np.ndarray] = {}
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    for i, name in enumerate(classifiers):
        report(progress, i / len(classifiers), f"training {CLASSIFIER_NAMES[name]}")
        pipe = build_pipeline(name, reader2=reader2_train, icc_threshold=icc_threshold,
                              corr_threshold=corr_threshold, max_features=max_features, random_state=seed,
                              reader1_repeat=repeat_train, icc_kind=icc_kind)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            cv_p = cross_val_predict(clone(pipe), Xtr, ytr, cv=folds, method="predict_proba")[:, 1]
            pipe.fit(Xtr, ytr)
        test_p = pipe.predict_proba(Xte)[:, 1]
        metrics["models"][name] = {"name": CLASSIFIER_NAMES[name], "cv_auc_train": auc_ci(ytr, cv_p),
                                   "test": binary_metrics(yte, test_p, 0.5),
                                   "n_selected": len(selected_features(pipe))}
        pipes[name] = pipe
        cv_preds[name], test_preds[name] = cv_p, test_p
        log.info("%s: CV AUC %.3f, test AUC %s", name, metrics["models"][name]["cv_auc_train"]["value"] or float("nan"),
                 metrics["models"][name]["test"]["auc"]["value"])
    main = pipes[classifiers[0]]
    report(progress, 1.0, "trained")
    return TrainResult(pipelines=pipes, metrics=metrics, train_ids=train_ids, test_ids=test_ids,
                       input_features=list(r1.columns), selected=selected_features(main),
                       selection=selection_summary(main), icc=dict(main.named_steps["stable"].icc_),
                       cv_predictions=cv_preds, test_predictions=test_preds)


def score_column(classifier: str) -> str:
    """Score column of a classifier in the prediction tables (the saved SVM keeps the batch's name)."""
    return "p_high_risk_radiomics" if classifier == "svm" else f"p_high_risk_radiomics_{classifier}"


def write_prediction_tables(res: TrainResult, labels: dict[str, str], out: Path,
                            synthetic: bool = False) -> dict[str, Path]:
    """``val_predictions.csv`` (5-fold out-of-fold predictions on the training cases: each case
    scored by a model that never saw it) and ``test_predictions.csv`` (held-out test cases).

    Same columns in both (``case_id, split, who_risk, high_risk, p_high_risk_radiomics, …``), so
    ``evaluate --predictions test_predictions.csv --label-col high_risk --score-col
    p_high_risk_radiomics --threshold-from val_predictions.csv`` runs as written.
    """
    import pandas as pd

    from ..fileio import atomic_path

    paths = {}
    for kind, ids, preds, split in (("val", res.train_ids, res.cv_predictions, "train (5-fold out-of-fold)"),
                                    ("test", res.test_ids, res.test_predictions, "test")):
        df = pd.DataFrame({"case_id": ids, "split": split, "who_risk": [labels[c] for c in ids],
                           "high_risk": [LABELS[labels[c]] for c in ids]})
        for name, p in preds.items():
            df[score_column(name)] = np.asarray(p, float)  # full precision, as the model gave them
        df["synthetic"] = bool(synthetic)
        path = out / f"{kind}_predictions.csv"
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        paths[kind] = path
    return paths


def metrics_table(metrics: dict[str, Any]) -> str:
    """Markdown table of the side-by-side comparison."""
    from .stats import fmt

    rows = ["| model | CV AUC (train) | test AUC | accuracy | sensitivity | specificity | PPV | NPV | F1 |",
            "|---|---|---|---|---|---|---|---|---|"]
    for m in metrics["models"].values():
        t = m["test"]
        rows.append(f"| {m['name']} | {fmt(m['cv_auc_train'])} | {fmt(t['auc'])} | {fmt(t['accuracy'])} | "
                    f"{fmt(t['sensitivity'])} | {fmt(t['specificity'])} | {fmt(t['ppv'])} | {fmt(t['npv'])} | "
                    f"{fmt(t.get('f1', {}))} |")
    return "\n".join(rows)


def train_radiomics(manifest: str | Path, out_dir: str | Path, *, name: str = "risk-radiomics-svm",
                    params: str | Path | dict[str, Any] | None = None, features: str | Path | None = None,
                    work_dir: str | Path | None = None, workers: int | None = None, seed: int = 0,
                    max_features: int | None = None, demo: bool = False, description: str = "",
                    progress: ProgressCallback | None = None, classifiers: tuple[str, ...] = CLASSIFIERS,
                    icc_kind: str = "2,1") -> Path:
    """Extract (or read) features, train, evaluate, save ``<out>/<name>.skops`` + card. Returns the card path.

    With ``features`` (a table from ``extract-radiomics``) the parameters are the table's own
    (from its sidecar); ``params`` given as well must match them (:func:`.extract.params_for_table`),
    so the card always names the parameters the model's features were extracted with. Also
    writes ``val_predictions.csv`` and ``test_predictions.csv`` (:func:`write_prediction_tables`).
    """
    from ..cohort import read_manifest
    from ..fileio import atomic_write_text, provenance
    from ..models.card import ModelCard, write_card_for
    from .extract import extract_cohort, package_versions, params_for_table, read_table
    from .model_io import save_pipeline
    from .params import load_params, params_hash
    from .stability import ICC_KINDS

    out = Path(out_dir)
    p = load_params(params) if features is None else params_for_table(features, params)
    cases = read_manifest(manifest)
    labels = {c.case_id: c.who_risk for c in cases if c.who_risk in LABELS}
    if not labels:
        raise InputError("no case has who_risk low/high", manifest)
    if features is None:
        work = Path(work_dir) if work_dir else out / "features"
        readers = ("1", "2", "1r") if any(c.mask_reader1_repeat for c in cases) else ("1", "2")
        ext = extract_cohort(manifest, work, p, workers=workers, case_ids=sorted(labels), readers=readers,
                             progress=lambda f, m: report(progress, 0.7 * f, m))
        table, features_path = ext["table"], ext["parquet"] or ext["csv"]
    else:
        table, features_path = read_table(features), Path(features)
    if classifiers[0] != "svm":
        raise InputError("the saved model is the SVM: 'svm' must be the first classifier")
    res = train_models(table, labels, {c.case_id: c.split for c in cases}, seed=seed, max_features=max_features,
                       classifiers=classifiers, progress=lambda f, m: report(progress, 0.7 + 0.28 * f, m),
                       icc_kind=icc_kind)
    stable = res.pipelines["svm"].named_steps["stable"]
    from ..evaluation.quality import poor_metric_warning

    quality = poor_metric_warning("auc", res.metrics["models"]["svm"]["cv_auc_train"].get("value"),
                                  what="cross-validated (training)", model=name)
    weights = save_pipeline(res.pipelines["svm"], out / f"{name}.skops")
    synthetic = all(c.synthetic for c in cases)
    card = ModelCard(
        name=name, task="risk-radiomics", weights_file=weights.name, demo=demo, classes=["low", "high"],
        architecture={"pipeline": [f"ICC({icc_kind}) > 0.85 stability filter, inter-observer"
                                   + (" and intra-observer" if stable.icc_intra_ else " only (no repeat outlines)")
                                   + " (train cases only)", "median imputation",
                                   "Pearson abs(r) > 0.9 redundancy filter", "standardisation",
                                   "LassoCV (5-fold) selection", "SMOTE 1:1", "SVM RBF (Platt-calibrated)"],
                      "classifier": "svm", "icc_type": ICC_KINDS[icc_kind],
                      "icc": {**res.metrics.get("icc_cases", {}), "inter_observer_features": len(stable.icc_),
                              "intra_observer_features": len(stable.icc_intra_),
                              "kept": len(stable.columns_), "threshold": 0.85,
                              "form_note": "the study does not state its ICC form; ICC(2,1) is our default"},
                      "selection": res.selection},
        preprocessing={"radiomics_params": p, "radiomics_params_hash": params_hash(p),
                       "window": p["preprocessing"]["window"],
                       "note": "CT clipped to the window before pyradiomics; features from the tumour mask"},
        input_schema={"features": res.input_features, "n_features": len(res.input_features),
                      "selected_features": res.selected},
        training_data={"manifest": str(manifest), "features_table": str(features_path), "synthetic": synthetic,
                       "n_cases": len(labels), "n_train": len(res.train_ids), "n_test": len(res.test_ids),
                       "test_case_ids": res.test_ids, "description": description or
                       ("SYNTHETIC thymic epithelial tumour cohort (mediastinal_ai.synthetic)" if synthetic
                        else "user cohort")},
        metrics=res.metrics,
        extra={"threshold": 0.5, "packages": package_versions(),
               "contribution_method": "P(high) minus P(high) with the feature set to its training mean "
                                      "(standardised value 0); approximation for the RBF SVM",
               **({"quality_warning": quality} if quality else {})},
        produced_by=provenance(seed=seed, command="train-radiomics"),
    )
    card_path = write_card_for(weights, card)
    atomic_write_text(out / f"{name}.metrics.md", metrics_table(res.metrics) + "\n")
    from .plots import write_lasso_plots

    write_lasso_plots(res.pipelines["svm"], out / "lasso_path_cv", synthetic=synthetic)
    write_prediction_tables(res, labels, out, synthetic=synthetic)
    return card_path
