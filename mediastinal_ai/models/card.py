"""Model cards: a model is data — one weights file plus this JSON description.

The card travels with the weights (like nnU-Net's plans file): it holds everything
inference must reproduce (preprocessing, classes, input schema) and everything a reader of a
result needs (training data, metrics, sha256, whether it is a demo model).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..fileio import atomic_write_json, sha256_file

CARD_SUFFIX = ".model.json"
KNOWN_TASKS = ("segmentation", "risk-radiomics", "risk-cnn", "fusion", "fusion-ct-only")


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,127}$")


def check_plain_name(value: object, field_name: str) -> str:
    """Refuse anything but a plain file/folder name (letters, digits, ``._+-``; no path parts).

    Why: ``name`` is used as the install folder and ``weights_file`` is joined to the card's
    folder; ``../x``, ``/etc/x`` or ``a/b`` would let a downloaded card write or read anywhere.
    """
    if not isinstance(value, str) or not _PLAIN_NAME.match(value) or ".." in value:
        raise ModelError(f"model card {field_name} {value!r} is not a plain name (letters, digits, '._+-'; "
                         "no folders, no '..')")
    return value


@dataclass
class ModelCard:
    name: str
    task: str
    weights_file: str  # file name, relative to the card's folder
    sha256: str = ""
    version: str = "0.1.0"
    architecture: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    input_schema: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    demo: bool = False
    intended_use: str = ""
    produced_by: dict[str, Any] = field(default_factory=dict)
    # MONAI-bundle style (metadata.json): "changelog" maps version → what changed; "license" the
    # weights' licence (SPDX id), "data_license" the terms of the data they were trained on.
    license: str = ""
    data_license: str = ""
    changelog: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A card is untrusted data: its name becomes a folder and its weights_file a path, so both
        # must be plain names (no separators, no "..", not absolute) or an install writes anywhere.
        check_plain_name(self.name, "name")
        if self.weights_file != "":  # "" while a trainer builds the card; write_card_for fills it
            check_plain_name(self.weights_file, "weights_file")
        if self.task not in KNOWN_TASKS:
            raise ModelError(f"unknown model task {self.task!r}; expected one of {KNOWN_TASKS}")
        if self.demo and not self.intended_use:
            from .. import DEMO_DISCLAIMER

            self.intended_use = DEMO_DISCLAIMER

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | Path | None = None) -> ModelCard:
        known = set(cls.__dataclass_fields__)
        missing = {"name", "task", "weights_file"} - set(d)
        if missing:
            raise ModelError(f"model card lacks {sorted(missing)}", source)
        unknown = set(d) - known
        extra = dict(d.get("extra", {}))
        for k in unknown:
            extra[k] = d[k]
        return cls(**{k: v for k, v in d.items() if k in known and k != "extra"}, extra=extra)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        if not path.is_file():
            raise ModelError("model card not found", path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(f"model card is not valid JSON ({e})", path) from e
        if not isinstance(d, dict):
            raise ModelError("model card must be a JSON object", path)
        return cls.from_dict(d, source=path)


# What each task's code outputs, in order. A card naming other classes describes a model this
# code would label wrongly. (Fusion cards list lesion classes; fusion.model_io checks those.)
TASK_CLASSES = {
    "segmentation": ["background", "anterior mediastinal tumor"],
    "risk-cnn": ["low risk (A/AB/B1)", "high risk (B2/B3/thymic carcinoma)"],
    "risk-radiomics": ["low", "high"],
}


def check_card_classes(card: ModelCard, source: str | Path | None = None) -> None:
    """Refuse a card whose ``classes`` are not what its task produces (an empty list: the default).

    Why: segmentation, CNN and radiomics cards with unknown classes were accepted and their
    outputs labelled with this code's classes, i.e. silently mislabelled.
    """
    classes = card.classes
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ModelError(f"model card classes must be a list of names, got {classes!r}", source)
    if not classes:
        return
    expected = TASK_CLASSES.get(card.task)  # fusion cards: fusion.model_io.check_classes (taxonomy names)
    if expected is not None and classes != expected:
        raise ModelError(f"a {card.task} model card must list the classes {expected} (what this code outputs), "
                         f"not {classes}", source)


@dataclass(frozen=True)
class ResolvedModel:
    """A model card whose weights file exists and matches its sha256."""

    card: ModelCard
    card_path: Path
    weights_path: Path

    @property
    def label(self) -> str:
        tag = " (demo — not for clinical use)" if self.card.demo else ""
        return f"{self.card.name} v{self.card.version} sha256:{self.card.sha256[:12]}{tag}"


def verify(card_path: str | Path, expected_task: str | None = None) -> ResolvedModel:
    """Load a card, check task and weights sha256; raise :class:`ModelError` on any mismatch."""
    card_path = Path(card_path)
    card = ModelCard.load(card_path)
    if expected_task is not None and card.task != expected_task:
        raise ModelError(f"model {card.name!r} is a {card.task!r} model, not {expected_task!r}", card_path)
    check_plain_name(card.weights_file, "weights_file")
    weights = (card_path.parent / card.weights_file).resolve()
    if weights.parent != card_path.parent.resolve():  # a symlinked weights file pointing elsewhere
        raise ModelError(f"weights file {card.weights_file!r} resolves outside the card's folder", card_path)
    if not weights.is_file():
        raise ModelError(f"weights file {card.weights_file!r} named by the card is missing", card_path)
    if not card.sha256:
        raise ModelError("model card has no sha256; refusing unverified weights", card_path)
    actual = sha256_file(weights)
    if actual != card.sha256:
        raise ModelError(
            f"sha256 mismatch for {weights.name}: card says {card.sha256[:16]}…, file is {actual[:16]}… "
            "(file corrupted or tampered)",
            weights,
        )
    check_card_classes(card, card_path)
    return ResolvedModel(card=card, card_path=card_path, weights_path=weights)


PROJECT_LICENSE = "Apache-2.0"
USER_LICENSE = "not specified: set 'license' before sharing this model"
SYNTHETIC_DATA_LICENSE = "synthetic data generated by mediastinal_ai.synthetic (Apache-2.0); no patient data"


def complete_card(card: ModelCard) -> ModelCard:
    """Fill what every trainer's card must carry, from what the card already says.

    * ``training_data.synthetic``: from the training manifest's ``synthetic`` column when the
      trainer did not say (a card without it read as "not synthetic" for synthetic data);
    * ``training_data.manifest_sha256``: the manifest's sha256, when the file is there;
    * ``license``/``data_license``/``changelog`` (MONAI-bundle names): demo models take the
      project's licence; user models say the licence is not specified.
    """
    td = card.training_data
    manifest = td.get("manifest")
    mpath = Path(str(manifest)) if manifest else None
    readable = bool(mpath and mpath.suffix.lower() == ".csv" and mpath.is_file())
    if readable and not td.get("manifest_sha256"):
        td["manifest_sha256"] = sha256_file(mpath)  # type: ignore[arg-type]
    if readable and "synthetic" not in td:
        from ..cohort import read_manifest
        from ..errors import InputError

        try:
            cases, _ = read_manifest(mpath, strict=False)  # type: ignore[arg-type, misc]
            td["synthetic"] = bool(cases) and all(c.synthetic for c in cases)
        except InputError:
            pass
    if not card.license:
        card.license = PROJECT_LICENSE if card.demo and td.get("synthetic") is True else USER_LICENSE
    if not card.data_license:
        if td.get("synthetic") is True:
            card.data_license = SYNTHETIC_DATA_LICENSE
        else:
            card.data_license = "the training cohort's own terms (not recorded)"
    if card.version not in card.changelog:
        command = (card.produced_by or {}).get("command") or "training"
        card.changelog = {card.version: f"trained ({command})", **card.changelog}
    return card


def write_card_for(weights_path: str | Path, card: ModelCard) -> Path:
    """Fill ``sha256``/``weights_file`` from the weights (and :func:`complete_card`'s fields) and save
    ``<stem>.model.json`` beside them."""
    from ..fileio import provenance

    weights_path = Path(weights_path)
    card.weights_file = weights_path.name
    card.sha256 = sha256_file(weights_path)
    if not card.produced_by:
        card.produced_by = provenance()
    complete_card(card)
    return card.save(weights_path.parent / (weights_path.name.split(".")[0] + CARD_SUFFIX))
