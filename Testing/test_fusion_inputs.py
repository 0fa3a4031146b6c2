"""CT + CTC fusion: validation and encoding of the CTC/clinical inputs (no torch needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mediastinal_ai.errors import InputError, ModelError
from mediastinal_ai.fusion import schema as sch
from mediastinal_ai.taxonomy import CTC_UNIT, LESION_SITES, SEXES

SCHEMA = sch.fit_schema([4.0, 8.0, 12.0, 20.0], [40.0, None, 60.0, 70.0], ["F", "M", None, "F"],
                        ["anterior", "anterior", "middle", None])


@pytest.mark.parametrize("value,fragment", [
    (-1, "cannot be negative"),
    ("-0.5", "cannot be negative"),
    ("abc", "must be a number"),
    ("12,5", "decimal separator"),
    (float("nan"), "finite"),
    ("nan", "finite"),
    ("inf", "finite"),
    (float("inf"), "finite"),
    (True, "yes/no"),
    ([3], "must be a number"),
    (1000.5, "not plausible"),
    ("5e6", "not plausible"),
    (None, "required"),
    ("  ", "required"),
])
def test_bad_ctc_values_are_refused_with_clear_messages(value, fragment):
    with pytest.raises(InputError) as e:
        sch.validate_inputs(value)
    assert fragment in str(e.value)
    assert "CTC" in str(e.value)


def test_good_ctc_values_accepted_from_numbers_and_text():
    assert sch.validate_inputs(0).ctc == 0.0
    assert sch.validate_inputs(" 8.7 ").ctc == 8.7
    assert sch.validate_inputs(np.float32(3.5)).ctc == 3.5
    assert sch.validate_inputs(sch.CTC_HARD_MAX).ctc == sch.CTC_HARD_MAX


def test_out_of_training_range_is_accepted_with_a_warning():
    v = sch.validate_inputs(150, 95, "M", "posterior", schema=SCHEMA)
    assert v.ctc == 150.0
    text = " ".join(v.warnings)
    assert "outside the range seen in training" in text and CTC_UNIT in text
    assert "age 95" in text
    assert "'posterior' was never seen in training" in text
    inside = sch.validate_inputs(10, 50, "F", "anterior", schema=SCHEMA)
    assert inside.warnings == []


@pytest.mark.parametrize("kwargs,fragment", [
    ({"age": -3}, "between 0 and 120"),
    ({"age": 130}, "between 0 and 120"),
    ({"age": "old"}, "age must be a number"),
    ({"age": "nan"}, "finite"),
    ({"sex": "X"}, "sex must be one of"),
    ({"sex": 1}, "sex must be one of"),
    ({"lesion_site": "superior"}, "lesion site must be one of"),
])
def test_bad_clinical_inputs_are_refused(kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        sch.validate_inputs(5, **kwargs)


def test_clinical_inputs_are_normalised_and_missing_is_explicit():
    v = sch.validate_inputs("7", "", "female", "Anterior")
    assert (v.age, v.sex, v.lesion_site) == (None, "F", "anterior")
    assert any("age not given" in n for n in v.notes)
    x = sch.encode(v, SCHEMA)
    names = SCHEMA["features"]
    assert len(x) == len(names) and x.dtype == np.float32
    f = dict(zip(names, x.tolist(), strict=True))
    assert f["age_missing"] == 1.0 and f["age_z"] == 0.0  # flagged, not a silent zero
    assert f["sex_F"] == 1.0 and f["sex_M"] == 0.0 and f["sex_missing"] == 0.0
    assert f["site_anterior"] == 1.0 and f["site_missing"] == 0.0
    none = dict(zip(names, sch.encode(sch.validate_inputs(7), SCHEMA).tolist(), strict=True))
    assert none["age_missing"] == none["sex_missing"] == none["site_missing"] == 1.0
    assert sum(none[f"sex_{s}"] for s in SEXES) == 0 and sum(none[f"site_{s}"] for s in LESION_SITES) == 0
    # CTC: z-score of log1p with the training statistics
    st = SCHEMA["normalisation"]["ctc"]
    assert math.isclose(f["ctc_z"], (math.log1p(7) - st["mean"]) / st["std"], rel_tol=1e-6)


def test_fit_schema_records_ranges_units_and_stats():
    assert SCHEMA["units"]["ctc"] == CTC_UNIT
    assert SCHEMA["ranges"]["ctc"] == [4.0, 20.0]
    assert SCHEMA["ranges"]["age"] == [40.0, 70.0]
    assert SCHEMA["ranges"]["sex"] == ["F", "M"]
    assert SCHEMA["ranges"]["lesion_site"] == ["anterior", "middle"]
    assert SCHEMA["ctc_hard_max"] == sch.CTC_HARD_MAX
    sch.check_schema(SCHEMA)


@pytest.mark.parametrize("change,fragment", [
    (lambda s: s.update(version=99), "version"),
    (lambda s: s.update(features=s["features"][::-1]), "do not match"),
    (lambda s: s.update(inputs=["ctc", "bmi"]), "unknown fusion input"),
    (lambda s: s["units"].update(ctc=""), "does not say the CTC unit"),  # any named unit is the model's own
    (lambda s: s["normalisation"].pop("ctc"), "normalisation"),
    (lambda s: s.update(categories={"sex": ["F", "M", "X"], "lesion_site": list(LESION_SITES)}), "categories"),
])
def test_mismatched_input_schema_is_refused(change, fragment):
    import copy

    s = copy.deepcopy(SCHEMA)
    change(s)
    with pytest.raises(ModelError, match=fragment):
        sch.check_schema(s)


def test_ctc_only_schema_ignores_clinical_inputs_with_a_note():
    s = sch.fit_schema([5.0, 9.0], [None, None], [None, None], [None, None], inputs=("ctc",))
    assert s["features"] == ["ctc_z"]
    v = sch.validate_inputs(6, 50, "F", "anterior", schema=s)
    assert any("not used by this model" in n for n in v.notes)
    assert sch.encode(v, s).shape == (1,)
