"""WHO risk of one tumour from its radiomics features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import DEMO_DISCLAIMER
from ..errors import ModelError
from ..fileio import provenance
from ..progress import ProgressCallback, report
from ..volume import Volume
from .model_io import RadiomicsModel, load_model


def _as_model(model: Any) -> RadiomicsModel:
    return model if isinstance(model, RadiomicsModel) else load_model(model)


def check_card_params(m: RadiomicsModel) -> None:
    """Refuse a card whose recorded parameter hash does not match its parameters (an edited card
    would extract other features than the model was trained on)."""
    from .params import load_params, params_hash

    recorded = m.card.preprocessing.get("radiomics_params_hash")
    if recorded and params_hash(load_params(m.params)) != recorded:
        raise ModelError(f"the model card's radiomics parameters (hash {params_hash(load_params(m.params))}) are not "
                         f"those it was trained with (hash {recorded}); the card was edited — reinstall the model",
                         m.path)


def predict_risk(ct: Volume, mask: Volume, model: Any = None, *, progress: ProgressCallback | None = None,
                 source: str | Path | None = None, features: dict[str, float] | None = None) -> dict[str, Any]:
    """Extract the model's features (with the model's own parameter file) and predict.

    ``features``: already extracted with the model's parameter file (the Slicer worker extracts
    them one image type at a time, for progress); then nothing is extracted here.

    Returns ``probability_high_risk``, ``group`` ("low"/"high"), ``features`` (selected
    features: value, standardised value, contribution to P(high); see
    :func:`.pipeline.contributions` for the approximation), the model (name, sha256, demo)
    and provenance.
    """
    import pandas as pd

    from .extract import extract_features
    from .pipeline import contributions

    m = _as_model(model)
    check_card_params(m)
    if features is None:
        report(progress, 0.05, "extracting radiomics features")
        feats = extract_features(ct, mask, m.params, source=source)
    else:
        feats = dict(features)
    missing = [f for f in m.input_features if f not in feats]
    if missing:
        raise ModelError(f"the extraction did not produce {len(missing)} features the model needs "
                         f"(e.g. {missing[:3]}): parameter file and model do not match", m.path)
    warnings = []
    unseen = sorted(set(feats) - set(m.input_features))
    if unseen:
        # Same names would be fine; new names mean these parameters are not the training ones.
        warnings.append(f"the model's parameters produced {len(unseen)} features the model was not trained on "
                        f"(e.g. {unseen[:2]}): the card's parameters may not be those of its training features")
    report(progress, 0.9, "predicting")
    X = pd.DataFrame([[feats[f] for f in m.input_features]], columns=m.input_features, index=["case"])
    p = float(m.pipeline.predict_proba(X)[0, 1])
    contrib = contributions(m.pipeline, X)
    result = {
        "task": "risk-radiomics",
        "probability_high_risk": p,
        "group": "high" if p >= m.threshold else "low",
        "threshold": m.threshold,
        "features": contrib,
        "contribution_method": m.card.extra.get("contribution_method", ""),
        "n_features_extracted": len(feats),
        "model": {"name": m.card.name, "label": m.label, "sha256": m.sha256, "demo": bool(m.card.demo),
                  "version": m.card.version},
        "provenance": provenance(model=m.card.name, model_sha256=m.sha256),
    }
    if m.card.demo:
        result["warning"] = DEMO_DISCLAIMER
    result["warnings"] = ([DEMO_DISCLAIMER] if m.card.demo else []) + warnings
    report(progress, 1.0, f"P(high risk) = {p:.2f}")
    return result


def result_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows for a prediction: one per selected feature, after a summary row."""
    rows = [{"item": "P(high risk)", "value": result["probability_high_risk"], "contribution": None,
             "note": f"group: {result['group']} · model {result['model']['label']}"}]
    for f in sorted(result["features"], key=lambda r: -abs(r["contribution"])):
        rows.append({"item": f["feature"], "value": f["value"], "contribution": f["contribution"],
                     "note": f"standardised {f['standardised']:+.2f}"})
    return rows
