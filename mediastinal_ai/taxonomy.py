"""Lesion vocabulary shared by the synthetic cohort, manifests and reports.

Trained models carry their own class list in the model card (that list, not this one, is
what a model predicts); this module only fixes the names and the two groupings the studies
use: benign vs malignant (fusion study) and the WHO risk group of thymic epithelial tumors
(low: A/AB/B1; high: B2/B3/thymic carcinoma).

Benign/malignant follows the fusion study's **Table 2**: every thymoma (A … B3, mixed) and
"others (not specified)" count as malignant. The study is not consistent here — its text speaks
of "benign thymoma" while its Table 2 lists all thymomas under malignant; we follow the table
(:data:`GROUPING_NOTE`, shown wherever the grouping is shown).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LesionClass:
    name: str
    display: str
    malignant: bool
    who_risk: str | None  # "low" | "high" | None (not a thymic epithelial tumor / not graded)


LESION_CLASSES: tuple[LesionClass, ...] = (
    LesionClass("cyst", "Cyst (thymic/bronchogenic/pericardial)", False, None),
    LesionClass("granuloma", "Granuloma", False, None),
    LesionClass("mature_teratoma", "Mature teratoma", False, None),
    LesionClass("schwannoma", "Schwannoma", False, None),
    LesionClass("fibroma", "Fibroma", False, None),
    LesionClass("hemangioma", "Hemangioma", False, None),
    LesionClass("lipoma", "Lipoma", False, None),
    LesionClass("thymoma_A", "Thymoma type A", True, "low"),
    LesionClass("thymoma_AB", "Thymoma type AB", True, "low"),
    LesionClass("thymoma_B1", "Thymoma type B1", True, "low"),
    LesionClass("thymoma_B2", "Thymoma type B2", True, "high"),
    LesionClass("thymoma_B3", "Thymoma type B3", True, "high"),
    LesionClass("thymoma_mixed", "Thymoma, mixed type", True, None),
    LesionClass("thymic_carcinoma", "Thymic squamous cell carcinoma", True, "high"),
    LesionClass("immature_teratoma", "Immature teratoma", True, None),
    LesionClass("malt_lymphoma", "MALT lymphoma", True, None),
    LesionClass("carcinoid", "Thymic carcinoid", True, None),
    LesionClass("lymphoma", "Lymphoma", True, None),
    LesionClass("metastasis", "Metastasis", True, None),
    LesionClass("other", "Others (not specified)", True, None),
)

BY_NAME = {c.name: c for c in LESION_CLASSES}
WHO_LOW = tuple(c.name for c in LESION_CLASSES if c.who_risk == "low")
WHO_HIGH = tuple(c.name for c in LESION_CLASSES if c.who_risk == "high")

GROUPING_NOTE = ("Benign/malignant as in the fusion study's Table 2: all thymomas and 'others (not specified)' "
                 "are malignant. The study's text also speaks of 'benign thymoma'; the table is followed.")

# Default label of the circulating-tumor-cell level: what the fusion study's Table 2 prints
# ("pg/ml"; its text describes CellSearch immunomagnetic counting, so the printed unit may not be
# what the assay reports). A site sets its own assay's unit when it trains a model
# (``train-fusion --ctc-unit``); the model's card then carries that unit and inference shows it.
CTC_UNIT = "pg/ml"
LESION_SITES = ("anterior", "middle", "posterior")
SEXES = ("F", "M")


def lesion_class(name: str) -> LesionClass:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown lesion class {name!r}; known: {', '.join(BY_NAME)}") from None
