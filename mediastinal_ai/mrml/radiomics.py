"""MRML adapter for the radiomics WHO-risk model ("Predict risk", "Compute all features").

The MediastinalAIRadiomics module calls these two functions; the same calls work headless on
``slicer-core``. Both read the CT from its volume node and the tumour from a segment
(resampled onto the CT grid by :func:`nodes.segment_to_mask`), call the core
(:mod:`mediastinal_ai.radiomics`) and write a table node. The full result is kept as JSON in
the table's ``MediastinalAI.radiomicsResult`` attribute, so a saved scene keeps it.
"""

from __future__ import annotations

import json
from typing import Any

import slicer

from ..progress import ProgressCallback
from . import nodes

ROLE_RISK = "radiomics-risk"
ROLE_FEATURES = "radiomics-features"
ATTR_RESULT = "MediastinalAI.radiomicsResult"
ATTR_SOURCE = "MediastinalAI.sourceVolume"
ATTR_RADIOMICS_VERSION = "MediastinalAI.radiomicsVersion"


def _existing_table(scene: Any, role: str, volume_node: Any, segment_id: str) -> Any:
    for n in nodes.nodes_by_attribute(scene, nodes.ATTR_ROLE, role, "vtkMRMLTableNode"):
        if n.GetAttribute(ATTR_SOURCE) == f"{volume_node.GetID()}/{segment_id}":
            return n
    return None


def _inputs(volume_node: Any, segmentation_node: Any, segment_id: str) -> tuple[Any, Any]:
    ct = nodes.node_to_volume(volume_node, units="HU")
    mask = nodes.segment_to_mask(segmentation_node, segment_id, ct)
    return ct, mask


def predict_risk(scene: slicer.vtkMRMLScene, volume_node: Any, segmentation_node: Any, segment_id: str,
                 model: Any = None, progress: ProgressCallback | None = None) -> tuple[Any, dict[str, Any]]:
    """Probability of high WHO risk for one segment → ``(table_node, result)``.

    The table has a summary row (P(high risk), group, model) then one row per selected
    feature (value, contribution to P(high risk)); a second prediction for the same volume
    and segment refills the same table. ``model`` is a model name, card path, loaded
    :class:`~mediastinal_ai.radiomics.RadiomicsModel`, or ``None`` for the default demo model.
    """
    from ..radiomics.model_io import RadiomicsModel, load_model
    from ..radiomics.predict import predict_risk as core_predict
    from .worker import radiomics_warnings

    ct, mask = _inputs(volume_node, segmentation_node, segment_id)
    m = model if isinstance(model, RadiomicsModel) else load_model(model or None)
    result = core_predict(ct, mask, model=m, progress=progress,
                          source=f"segment {segment_id!r} of {segmentation_node.GetName()!r}")
    # as the GUI's child process does: say when the installed radiomics is not the card's
    warnings = radiomics_warnings((m.card.extra or {}).get("packages"))
    if warnings:
        result["warnings"] = [*result.get("warnings", []), *warnings]
    return publish_risk(scene, volume_node, segmentation_node, segment_id, result)


def publish_risk(scene: slicer.vtkMRMLScene, volume_node: Any, segmentation_node: Any, segment_id: str,
                 result: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Put a radiomics risk result (computed here or by the GUI's child process) into a table."""
    from ..radiomics.predict import result_rows

    result["segment_id"] = segment_id
    table = nodes.records_to_table(
        scene, result_rows(result), name=f"Radiomics risk - {volume_node.GetName()}",
        node=_existing_table(scene, ROLE_RISK, volume_node, segment_id), role=ROLE_RISK,
        attributes={ATTR_SOURCE: f"{volume_node.GetID()}/{segment_id}",
                    "MediastinalAI.model": result["model"]["name"],
                    "MediastinalAI.modelSha256": result["model"]["sha256"],
                    ATTR_RADIOMICS_VERSION: _radiomics_version_text(),
                    ATTR_RESULT: json.dumps(result, default=str)})
    nodes.stamp_provenance([table], volume_node, model=result["model"], task="risk-radiomics", segment_id=segment_id)
    result["table_node_id"] = table.GetID()
    return table, result


def _radiomics_version_text(packages: dict[str, str] | None = None) -> str:
    """'pyradiomics-bhklab 3.1.4': the radiomics that computed a table's features."""
    if packages:
        for name in ("pyradiomics-bhklab", "pyradiomics"):
            if packages.get(name):
                return f"{name} {packages[name]}"
    from .dependencies import radiomics_version

    found = radiomics_version()
    return " ".join(found) if found else "unknown"


def feature_rows(features: dict[str, float]) -> list[dict[str, Any]]:
    """pyradiomics names ``<image type>_<class>_<feature>`` → tidy rows (as SlicerRadiomics shows them)."""
    rows = []
    for name, value in features.items():
        parts = name.split("_", 2)
        image_type, feature_class, feature = parts if len(parts) == 3 else ("", "", name)
        rows.append({"image_type": image_type, "feature_class": feature_class, "feature": feature, "value": value,
                     "name": name})
    return rows


def compute_all_features(scene: slicer.vtkMRMLScene, volume_node: Any, segmentation_node: Any, segment_id: str,
                         params: Any = None, progress: ProgressCallback | None = None) -> Any:
    """Every pyradiomics feature of the segment (published parameter file unless ``params``
    names another YAML / dict) → a table node, one row per feature."""
    from ..progress import report
    from ..radiomics.extract import extract_features
    from ..radiomics.params import load_params

    p = load_params(params)
    ct, mask = _inputs(volume_node, segmentation_node, segment_id)
    report(progress, 0.05, "extracting all radiomics features (can take a minute)")
    feats = extract_features(ct, mask, p, source=f"segment {segment_id!r} of {segmentation_node.GetName()!r}")
    table = publish_features(scene, volume_node, segmentation_node, segment_id, feats, p)
    report(progress, 1.0, f"{len(feats)} features")
    return table


def publish_features(scene: slicer.vtkMRMLScene, volume_node: Any, segmentation_node: Any, segment_id: str,
                     feats: dict[str, float], params: dict[str, Any],
                     packages: dict[str, str] | None = None) -> Any:
    """Put a full feature table (computed here or by the GUI's child process) into the scene;
    the radiomics version that computed it is kept with it (``MediastinalAI.radiomicsVersion``)."""
    from ..radiomics.params import params_hash

    table = nodes.records_to_table(
        scene, feature_rows(feats), name=f"Radiomics features - {volume_node.GetName()}",
        node=_existing_table(scene, ROLE_FEATURES, volume_node, segment_id), role=ROLE_FEATURES,
        columns=["image_type", "feature_class", "feature", "value", "name"],
        attributes={ATTR_SOURCE: f"{volume_node.GetID()}/{segment_id}",
                    "MediastinalAI.radiomicsParamsHash": params_hash(params),
                    ATTR_RADIOMICS_VERSION: _radiomics_version_text(packages),
                    "MediastinalAI.radiomicsParams": json.dumps(params, default=str)})
    nodes.stamp_provenance([table], volume_node, task="radiomics-features", radiomics_params_hash=params_hash(params))
    return table


def stored_result(table_node: Any) -> dict[str, Any] | None:
    """The full prediction kept with a risk table (e.g. after reloading a scene)."""
    text = table_node.GetAttribute(ATTR_RESULT) if table_node is not None else None
    return json.loads(text) if text else None
