"""Issue 18 item 8: honest pictures — marks on every figure, labelled ROC bands, validation Dice
visible, Grad-CAM with colour bar/orientation/model, named confusion rows, wrapped PDF tables,
rounded numbers, one row per model, no temporary paths, ROC first."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pd = pytest.importorskip("pandas")

from mediastinal_ai.evaluation import plots  # noqa: E402


def _texts(fig) -> str:
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.texts]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        leg = ax.get_legend()
        if leg:
            out += [t.get_text() for t in leg.get_texts()]
    return "\n".join(out)


def test_roc_band_labelled_with_counts_and_mark():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(12), np.zeros(28)].astype(int)
    s = y * 0.8 + rng.normal(0, 0.5, y.size)
    fig = plots.plot_roc(y, {"svm": s}, n_boot=50, mark=plots.mark_text(synthetic=True, demo=True))
    text = _texts(fig)
    assert "12 positive" in text and "28 negative" in text and "n = 40" in text
    assert "95% pointwise bootstrap band" in text and "50 resamples" in text and "DeLong" in text
    assert plots.figure_marks(fig) == [f"{plots.SYNTHETIC_MARK} · {plots.DEMO_MARK}"]
    assert plots.figure_marks(plots.plot_roc(y, {"svm": s}, ci_band=False)) == []  # real data, real model: none


def test_confusion_rows_named_by_class():
    from mediastinal_ai.evaluation.evaluate import class_names

    fig = plots.plot_confusion(5, 2, 10, 3, labels=class_names("who_risk"))
    text = _texts(fig)
    assert "true\nWHO low risk" in text and "true\nWHO high risk" in text and "predicted\nWHO high risk" in text
    assert "83% of row" in text  # 10 of the 12 true-low cases (TN 10, FP 2)
    assert class_names("malignant") == ("benign", "malignant")


def test_training_curves_draw_sparse_validation_dice(tmp_path):
    rows = [{"epoch": e, "loss": 1 - e / 20, "val_dice": round(0.1 + e / 25, 3) if (e + 1) % 5 == 0 else ""}
            for e in range(20)]
    log = tmp_path / "training_log.csv"
    pd.DataFrame(rows).to_csv(log, index=False)
    (tmp_path / "m.model.json").write_text('{"demo": true, "training_data": {"synthetic": true}}')
    fig = plots.plot_training_curves(log)
    lines = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == "val_dice"]
    assert len(lines) == 1
    x = np.asarray(lines[0].get_xdata(), float)
    yv = np.asarray(lines[0].get_ydata(), float)
    assert list(x) == [4, 9, 14, 19] and np.isfinite(yv).all()  # every measured point, no NaN gaps
    assert lines[0].get_marker() == "o"
    png = plots.write_training_curves(log, tmp_path / "training_curves.png")
    assert png is not None and png.is_file()
    assert plots.mark_from_cards(tmp_path) == f"{plots.SYNTHETIC_MARK} · {plots.DEMO_MARK}"


def test_gradcam_has_colour_bar_orientation_letters_model_name_and_mark():
    ct = np.full((40, 50), 40.0)
    heat = np.zeros((40, 50))
    heat[10:20, 10:30] = 1.0
    mask = heat > 0
    fig = plots.plot_gradcam(ct, heat, mask, direction=np.eye(3), spacing_xy=(0.8, 0.8), model="demo-risk-cnn",
                             title="P(high risk) = 0.70", mark=plots.mark_text(demo=True))
    assert len(fig.axes) == 2  # image + colour bar
    text = _texts(fig)
    assert "Grad-CAM" in text and "model: demo-risk-cnn" in text
    # LPS identity: +i points to the patient's left (image right), +j posterior (image bottom)
    assert plots.orientation_letters(np.eye(3)) == {"right": "L", "left": "R", "bottom": "P", "top": "A"}
    for letter in "LRPA":
        assert any(t.get_text() == letter for t in fig.axes[0].texts)
    flipped = np.diag([-1.0, -1.0, 1.0])  # an RAS-ordered volume
    assert plots.orientation_letters(flipped) == {"right": "R", "left": "L", "bottom": "A", "top": "P"}
    assert plots.figure_marks(fig) == [plots.DEMO_MARK]


def test_every_evaluate_figure_is_marked_and_report_puts_roc_first(tmp_path, monkeypatch):
    from mediastinal_ai.evaluation.evaluate import evaluate_predictions

    saved = []
    real_save = plots.save_figure

    def spy(fig, stem, *a, **kw):
        saved.append((str(stem), plots.figure_marks(fig)))
        return real_save(fig, stem, *a, **kw)

    monkeypatch.setattr(plots, "save_figure", spy)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    df = pd.DataFrame({"case_id": [f"c{i}" for i in range(60)], "who_risk": y,
                       "p_svm": np.clip(y * 0.3 + rng.uniform(0, 0.7, 60), 0, 1),
                       "p_cnn": np.clip(y * 0.2 + rng.uniform(0, 0.8, 60), 0, 1)})
    evaluate_predictions(df, "who_risk", ["p_svm", "p_cnn"], tmp_path, synthetic=True, demo=True, report=True)
    assert len(saved) >= 7  # roc, 2 confusion, 2 calibration, 2 decision curves
    assert all(marks == [f"{plots.SYNTHETIC_MARK} · {plots.DEMO_MARK}"] for _, marks in saved), saved
    html = (tmp_path / "cohort_report.html").read_text(encoding="utf-8")
    caps = [c.split("</figcaption>")[0] for c in html.split("<figcaption>")[1:]]
    assert caps[0] == "roc" and any(c.startswith("calibration") for c in caps)


def test_report_numbers_rounded_tables_wrapped_models_once_no_temporary_source():
    from mediastinal_ai.evaluation import report

    assert report._fmt("0.723423423423") == "0.723" and report._fmt("12") == "12"
    assert report._fmt("synth_000123") == "synth_000123" and report._fmt("1.2.3") == "1.2.3"
    long = "a very long lesion comment that would run off the page " * 3
    head, cells, widths = report._wrapped_table(["case_id", "comment"], [{"case_id": "c1", "comment": long}])
    assert " ".join(" ".join(cells[0][1]).split()) == " ".join(long.split())  # all of it, wrapped, nothing cut
    assert len(cells[0][1]) > 1 and abs(sum(widths) - 1) < 1e-9
    parts = {"segmentation": {"model": "demo-seg", "model_sha256": "abc", "demo": True},
             "cnn": {"model": "demo-seg", "demo": True}}
    c = report.case_from_parts(parts, None, None, None, None, case_id="c1")
    assert [m["model"] for m in c["models"]] == ["demo-seg"] and c["models"][0]["sha256"] == "abc"
    assert report._source_folder("/runs/out/.work/c1.1a2b3c4d", "c1") == "/runs/out/cases/c1"
    assert report._source_folder("/data/case7", "case7") == "/data/case7"
