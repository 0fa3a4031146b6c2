"""Predictions joined with the manifest's labels: the table ``evaluate`` takes, with no user code.

Sources of predictions (``--from``):

* the folder a batch (``run``) wrote, or its ``results.csv``: one row per case with the score
  columns ``p_high_risk_radiomics``, ``p_high_risk_cnn``, ``p_malignant_fusion``, ``p_malignant_ct_only``;
* a folder of case folders written by the per-case commands (``<dir>/<case_id>/`` holding
  ``radiomics_result.json``, ``cnn_result.json``, ``fusion_result.json``; see
  :mod:`mediastinal_ai.case_files`).

Output columns: ``case_id, split, synthetic, who_risk, high_risk, lesion_class, malignant`` (labels
from the manifest; ``high_risk`` is ``who_risk`` as 0/1, empty for non-thymic lesions) followed by
the score columns found. Then, for example::

    mediastinal-ai evaluate --predictions predictions.csv --label-col high_risk \\
        --score-col p_high_risk_radiomics --compare-col p_high_risk_cnn --out eval/

``run`` on a manifest writes this table itself as ``<out>/predictions.csv``.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from ..errors import InputError

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("case_id", "split", "synthetic", "who_risk", "high_risk", "lesion_class", "malignant")
SCORE_COLUMNS = ("p_high_risk_radiomics", "p_high_risk_cnn", "p_malignant_fusion", "p_malignant_ct_only")


def manifest_labels(manifest: str | Path) -> dict[str, dict[str, Any]]:
    """case id → label columns, for every usable manifest row (ids as the batch names them)."""
    from ..batch.discover import safe_case_id
    from ..cohort import read_manifest

    cases, _errors = read_manifest(manifest, strict=False)  # type: ignore[misc]
    out: dict[str, dict[str, Any]] = {}
    for c in cases:
        row = {"case_id": c.case_id, "split": c.split or "", "synthetic": bool(c.synthetic),
               "who_risk": c.who_risk or "", "high_risk": "" if c.high_risk is None else int(c.high_risk),
               "lesion_class": c.lesion_class or "", "malignant": "" if c.malignant is None else int(c.malignant)}
        out[c.case_id] = row
        out.setdefault(safe_case_id(c.case_id), row)  # the batch's folder name, when it differs
    return out


def _scores_from_case_folder(folder: Path) -> dict[str, Any]:
    from ..case_files import find_result

    def read(task: str) -> dict[str, Any]:
        p = find_result(folder, task)
        if p is None:
            return {}
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return d if isinstance(d, dict) else {}

    s: dict[str, Any] = {}
    rad, cnn, fu = read("risk-radiomics"), read("risk-cnn"), read("fusion")
    if "probability_high_risk" in rad:
        s["p_high_risk_radiomics"] = rad["probability_high_risk"]
    if "probability_high_risk" in cnn:
        s["p_high_risk_cnn"] = cnn["probability_high_risk"]
    if isinstance(fu.get("fusion"), dict):
        s["p_malignant_fusion"] = fu["fusion"].get("p_malignant")
    if isinstance(fu.get("ct_only"), dict):
        s["p_malignant_ct_only"] = fu["ct_only"].get("p_malignant")
    return s


def read_scores(source: str | Path) -> dict[str, dict[str, Any]]:
    """case id → score columns, from a batch ``results.csv`` (or its folder) or a folder of case folders."""
    src = Path(source)
    if src.is_dir() and (src / "results.csv").is_file():
        src = src / "results.csv"
    if src.is_file():
        with open(src, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and "case_id" not in rows[0]:
            raise InputError("not a batch results table (no case_id column)", src)
        out = {}
        for r in rows:
            if r.get("status", "ok") not in ("ok", "skipped"):
                continue
            vals = {c: float(r[c]) for c in SCORE_COLUMNS if (r.get(c) or "").strip() not in ("", "nan")}
            if vals:
                out[r["case_id"]] = vals
        return out
    if src.is_dir():
        root = src / "cases" if (src / "cases").is_dir() else src
        out = {}
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            s = _scores_from_case_folder(d)
            if s:
                out[d.name] = s
        return out
    raise InputError("predictions source not found (a batch --out folder, its results.csv, or a folder of "
                     "case folders)", src)


def join_predictions(manifest: str | Path, source: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows for ``evaluate`` and a note: ``{"n_predicted", "n_joined", "no_label_row": [...], "unpredicted": [...]}``."""
    labels = manifest_labels(manifest)
    scores = read_scores(source)
    if not scores:
        raise InputError("no predictions found (no case with a radiomics, CNN or fusion score)", source)
    rows, orphans = [], []
    for cid, s in scores.items():
        lab = labels.get(cid)
        if lab is None:
            orphans.append(cid)
            continue
        rows.append({**lab, **{c: s.get(c, "") for c in SCORE_COLUMNS}})
    if not rows:
        raise InputError(f"none of the {len(scores)} predicted case ids is in the manifest "
                         f"(e.g. {sorted(scores)[:3]})", manifest)
    used = {c for c in SCORE_COLUMNS if any(r[c] != "" for r in rows)}
    rows = [{k: v for k, v in r.items() if k in LABEL_COLUMNS or k in used} for r in rows]
    predicted = {r["case_id"] for r in rows}
    unpredicted = sorted({v["case_id"] for v in labels.values()} - predicted)
    note = {"n_predicted": len(scores), "n_joined": len(rows), "no_manifest_row": sorted(orphans),
            "unpredicted": unpredicted, "score_columns": [c for c in SCORE_COLUMNS if c in used]}
    return rows, note


def write_predictions(rows: list[dict[str, Any]], path: str | Path) -> Path:
    from ..fileio import atomic_path

    path = Path(path)
    cols = list(rows[0]) if rows else list(LABEL_COLUMNS)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path


def evaluate_hint(note: dict[str, Any], path: str | Path) -> str:
    cols = note["score_columns"]
    label = "malignant" if cols and all(c.startswith("p_malignant") for c in cols) else "high_risk"
    score = next((c for c in cols if (label == "high_risk") == c.startswith("p_high_risk")), cols[0] if cols else "?")
    others = [c for c in cols if c != score and c.startswith("p_high_risk" if label == "high_risk" else "p_malignant")]
    return (f"mediastinal-ai evaluate --predictions {path} --label-col {label} --score-col {score}"
            + (f" --compare-col {' '.join(others)}" if others else "") + " --out eval/")
