"""Per-case and cohort reports on synthetic data: HTML sections and embedded images, PDF pages
rendered to PNG (pdftoppm) and not blank, "not run" for missing parts, labels for synthetic data
and demo models, CLI entry points."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mediastinal_ai.errors import InputError


class _Sections(HTMLParser):
    def __init__(self):
        super().__init__()
        self.h2, self.images, self.banners, self._tag, self._cls = [], [], [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._tag, self._cls = tag, a.get("class")
        if tag == "img":
            self.images.append(a.get("src", ""))

    def handle_data(self, data):
        if self._tag == "h2":
            self.h2.append(data.strip())
        elif self._tag == "div" and self._cls == "banner":
            self.banners.append(data.strip())

    def handle_endtag(self, tag):
        self._tag = None


def parse_html(path: Path) -> _Sections:
    p = _Sections()
    p.feed(path.read_text(encoding="utf-8"))
    for src in p.images:
        assert src.startswith("data:image/png;base64,"), src[:40]  # self-contained
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    return p


def check_pdf(pdf: Path, tmp: Path) -> int:
    """Render every page to PNG and check each has content; returns the page count."""
    assert pdf.read_bytes()[:5] == b"%PDF-"
    exe = shutil.which("pdftoppm")
    if exe is None:
        pytest.skip("pdftoppm (poppler-utils) not installed: PDF pages not rendered")
    subprocess.run([exe, "-r", "30", "-png", str(pdf), str(tmp / "page")], check=True, timeout=120)
    pages = sorted(tmp.glob("page*.png"))
    assert pages
    import matplotlib.image as mpimg

    for pg in pages:
        img = mpimg.imread(pg)
        assert img.size > 0 and float(np.std(img)) > 0.01, f"{pg.name} is blank"
    return len(pages)


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    """A synthetic case folder as the task CLIs write it (segmentation + radiomics + fusion; no CNN)."""
    from mediastinal_ai.io import write_image
    from mediastinal_ai.synthetic import generate_case

    d = tmp_path_factory.mktemp("case") / "syn_0007"
    d.mkdir()
    case = generate_case(7, "thymoma_B2", inplane_size=64)
    write_image(case.ct, d / "ct.nrrd")
    write_image(case.mask, d / "mask.nrrd")
    lesion = {"lesion_id": 1, "volume_ml": 23.4, "max_diameter_mm": 41.0, "centroid_lps_mm": [1.0, 2.0, 3.0],
              "mean_hu": 38.0, "max_probability": 0.97, "voxels": 1234}
    (d / "segmentation_result.json").write_text(json.dumps({"task": "segmentation", "n_lesions": 1, "lesions": [lesion],
                                               "threshold": 0.5, "model": "unet-demo", "model_sha256": "a" * 64,
                                               "demo": True}))
    pd.DataFrame([{**lesion, "centroid_lps_mm": "1 2 3"}]).to_csv(d / "lesions.csv", index=False)
    (d / "radiomics_result.json").write_text(json.dumps({
        "probability_high_risk": 0.71, "group": "high", "threshold": 0.5,
        "features": [{"feature": "original_shape_Sphericity", "value": 0.5, "contribution": -0.2},
                     {"feature": "wavelet-LLH_glcm_Idm", "value": 0.1, "contribution": 0.4}],
        "model": {"name": "radiomics-svm-demo", "label": "radiomics-svm-demo 0.1", "sha256": "b" * 64, "demo": True}}))
    (d / "fusion_result.json").write_text(json.dumps({
        "task": "fusion", "inputs": {"ctc": 9.5, "age": 55, "sex": "F"}, "ctc_unit": "FU/3 mL",
        "fusion": {"p_malignant": 0.83, "call": "malignant", "threshold": 0.5, "model": "dmfn-demo",
                   "model_sha256": "c" * 64,
                   "top3": [{"class": "thymoma_B2", "display": "Thymoma B2", "probability": 0.4}]},
        "ct_only": None, "warnings": ["demo model trained on synthetic data — not for clinical use"]}))
    return d


def test_case_report_sections_images_and_labels(case_dir, tmp_path):
    from mediastinal_ai.evaluation.report import DEMO_TEXT, SYNTHETIC_TEXT, write_case_report

    paths = write_case_report(case_dir, tmp_path / "rep")
    html_path, pdf_path = paths
    assert html_path.name == "report.html" and pdf_path.name == "report.pdf"
    p = parse_html(html_path)
    assert p.h2 == ["Key image", "Segmentation", "Risk probabilities", "CTC fusion", "Models"]
    assert len(p.images) == 1  # CT key image; no Grad-CAM in this folder
    assert SYNTHETIC_TEXT in p.banners and DEMO_TEXT in p.banners
    text = html_path.read_text(encoding="utf-8")
    assert "Grad-CAM: not run" in text and "not run" in text  # CNN missing
    assert text.index("wavelet-LLH_glcm_Idm") < text.index("original_shape_Sphericity")  # by |contribution|
    for s in ("a" * 64, "b" * 64, "c" * 64, "0.710", "0.830", "Thymoma B2", "41.0"):
        assert s in text, s
    assert check_pdf(pdf_path, tmp_path) >= 1
    assert not list((tmp_path / "rep").glob(".tmp-*"))


def test_case_report_with_gradcam_and_empty_folder(case_dir, tmp_path):
    from mediastinal_ai.evaluation.report import write_case_report
    from mediastinal_ai.io import read_image, write_image

    ct = read_image(case_dir / "ct.nrrd")
    d = tmp_path / "c2"
    shutil.copytree(case_dir, d)
    cam = ct.with_array(np.clip((ct.array.astype(np.float32) + 100) / 400, 0, 1))
    write_image(cam, d / "gradcam.nrrd")
    (d / "cnn_result.json").write_text(json.dumps({"probability_high_risk": 0.64, "group": "high", "threshold": 0.5,
                                                   "model": "cnn-demo", "model_sha256": "d" * 64, "demo": True}))
    h, _ = write_case_report(d, tmp_path / "r2")
    assert len(parse_html(h).images) == 2
    assert "0.640" in h.read_text(encoding="utf-8")
    # nothing at all: every section says "not run", no banner claims
    empty = tmp_path / "empty"
    empty.mkdir()
    h, pdf = write_case_report(empty, tmp_path / "r3")
    p = parse_html(h)
    assert p.images == [] and p.banners == []
    text = h.read_text(encoding="utf-8")
    assert text.count("not run") >= 4
    with pytest.raises(InputError, match="does not exist"):
        write_case_report(tmp_path / "nope", tmp_path / "r4")


@pytest.fixture(scope="module")
def cohort_predictions(tmp_path_factory):
    """Labels from synthetic cases (WHO risk of generated thymomas) and two made-up scores."""
    from mediastinal_ai.synthetic import generate_case
    from mediastinal_ai.taxonomy import WHO_HIGH, WHO_LOW

    d = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(11)
    rows = []
    for i in range(40):
        cls = (list(WHO_LOW) + list(WHO_HIGH))[i % 6]
        y = int(cls in WHO_HIGH)
        rows.append({"case_id": f"syn_{i:04d}", "lesion_class": cls, "high_risk": y, "synthetic": True,
                     "p_radiomics": float(1 / (1 + np.exp(-(1.5 * y - 0.75 + rng.normal())))),
                     "p_cnn": float(1 / (1 + np.exp(-(0.5 * y - 0.25 + rng.normal())))),
                     "R1": int(np.clip(round(3 + y + rng.normal()), 1, 5)),
                     "R1_aided": int(np.clip(round(3 + 1.5 * y + rng.normal(0, 0.7)), 1, 5)),
                     "R2": int(rng.random() < (0.7 if y else 0.3))})
    assert generate_case(3, rows[3]["lesion_class"], inplane_size=32).metadata["synthetic"]
    path = d / "predictions.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_cohort_report_via_cli(cohort_predictions, tmp_path, capsys):
    from mediastinal_ai.cli import main

    out = tmp_path / "eval"
    froc = tmp_path / "froc.csv"
    pd.DataFrame({"iou_threshold": [0.05, 0.5, 0.95], "sensitivity": [0.9, 0.8, 0.2],
                  "fp_per_scan": [0.6, 0.5, 0.1]}).to_csv(froc, index=False)
    log = tmp_path / "fusion_run" / "training_log.csv"  # fusion style: two models in one log
    log.parent.mkdir()
    pd.DataFrame({"model": ["fusion"] * 3 + ["ct_only"] * 3, "epoch": [1, 2, 3] * 2,
                  "train_loss": [0.9, 0.7, 0.6, 1.0, 0.8, 0.75], "val_loss": [0.95, 0.8, 0.7, 1.0, 0.9, 0.9]}
                 ).to_csv(log, index=False)
    rc = main(["evaluate", "--predictions", str(cohort_predictions), "--label-col", "high_risk",
               "--score-col", "p_radiomics", "--compare-col", "p_cnn", "--threshold", "0.5", "--out", str(out),
               "--readers", "R1", "R2", "--aided", "R1=R1_aided", "--reader-threshold", "4",
               "--froc", str(froc), "--training-log", str(log)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "p_radiomics: AUC" in printed and "p_radiomics vs p_cnn" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["synthetic"] is True and summary["thresholds"] == {"p_radiomics": 0.5, "p_cnn": 0.5}
    assert {r["model"] for r in summary["auc"]} == {"p_radiomics", "p_cnn"}
    for f in ("roc.png", "roc.svg", "metrics.csv", "cohort_report.html", "cohort_report.pdf",
              "calibration_p_cnn.png", "decision_curve_p_radiomics.svg", "confusion_p_cnn.png"):
        assert (out / f).stat().st_size > 500, f
    p = parse_html(out / "cohort_report.html")
    assert p.h2 == ["Cohort", "Discrimination (AUC, 95% CI)", "Model comparisons (paired DeLong)", "Reader study",
                    "Threshold metrics (95% CI)", "Calibration and decision curve", "Plots", "Per-case table"]
    rs = summary["reader_study"]
    assert [t["comparison"] for t in rs["tests"]] == ["R1 unaided vs model", "R1 aided vs model",
                                                      "R1 aided vs unaided", "R2 unaided vs model"]
    assert (out / "froc.svg").is_file() and (out / "training_curves_1.png").is_file()
    assert len(p.images) >= 9 and "SYNTHETIC data — not a patient" in p.banners
    text = (out / "cohort_report.html").read_text(encoding="utf-8")
    assert "syn_0039" in text and "Wilson score" in text
    assert check_pdf(out / "cohort_report.pdf", tmp_path) >= 2
    # report --cohort regenerates from the folder
    assert main(["report", "--cohort", str(out), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "cohort_report.pdf").is_file()


def test_cli_errors(cohort_predictions, tmp_path, capsys):
    from mediastinal_ai.cli import main

    assert main(["evaluate", "--predictions", str(cohort_predictions), "--label-col", "nope",
                 "--score-col", "p_cnn", "--out", str(tmp_path / "x")]) != 0
    assert "nope" in capsys.readouterr().err
    bad = tmp_path / "one_class.csv"
    pd.DataFrame({"y": [1, 1, 1], "s": [0.1, 0.5, 0.9]}).to_csv(bad, index=False)
    assert main(["evaluate", "--predictions", str(bad), "--label-col", "y", "--score-col", "s",
                 "--out", str(tmp_path / "y")]) != 0
    assert "only one class" in capsys.readouterr().err
    assert main(["report", "--cohort", str(tmp_path), "--out", str(tmp_path / "z")]) != 0
    assert "summary.json" in capsys.readouterr().err


def test_threshold_from_training_predictions(cohort_predictions, tmp_path):
    from mediastinal_ai.evaluation.evaluate import evaluate_predictions
    from mediastinal_ai.evaluation.thresholds import youden_threshold

    df = pd.read_csv(cohort_predictions)
    train, test = df.iloc[:20], df.iloc[20:]
    s = evaluate_predictions(test, "high_risk", ["p_radiomics"], tmp_path / "e", threshold_df=train, report=False)
    assert s["thresholds"]["p_radiomics"] == youden_threshold(train["high_risk"], train["p_radiomics"])
    assert "training/validation" in s["threshold_note"]
