"""Per-case and cohort reports as self-contained HTML (images base64-embedded) and PDF
(matplotlib PdfPages — no extra dependency).

Per-case input: a *case result folder* as written by the task CLIs / the batch runner
(docs/evaluation.md). Every part is optional; a missing part shows "not run":

    segmentation_result.json  segmentation result (task "segmentation": model, model_sha256, lesions;
                              an older folder's result.json is read too)
    lesions.csv               lesion table
    mask.nrrd                 tumor mask (CT grid)
    ct.nrrd | ct.nii.gz       the CT (or pass ``ct=`` — the batch runner does)
    gradcam.nrrd              Grad-CAM map of the CNN (CT grid)
    radiomics_result.json     predict-radiomics output
    cnn_result.json           predict-cnn output
    fusion_result.json        predict-fusion output
    (names from :mod:`mediastinal_ai.case_files`)
    case.json                 optional {"case_id", "synthetic"}

Cohort input: the folder written by ``mediastinal-ai evaluate`` (summary.json, plots, per-case
predictions.csv).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..case_files import RESULT_FILES
from ..errors import InputError
from ..fileio import atomic_path, atomic_write_text, provenance

log = logging.getLogger(__name__)

DEMO_TEXT = "demo — not for clinical use"
SYNTHETIC_TEXT = "SYNTHETIC data — not a patient"
RISK_PARTS = (("radiomics", RESULT_FILES["risk-radiomics"], "Radiomics risk (WHO low/high)"),
              ("cnn", RESULT_FILES["risk-cnn"], "CNN risk (WHO low/high)"))
CT_NAMES = ("ct.nrrd", "ct.nii.gz", "ct.nii", "ct.mha")


# ----------------------------------------------------------------------------- small helpers
def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("unreadable %s: %s", path, e)
        return {"_error": f"unreadable: {e}"}
    return d if isinstance(d, dict) else {"_error": "not a JSON object"}


def _read_csv(path: Path) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.{digits}f}"
    if isinstance(v, str) and ("." in v or "e" in v.lower()) and digits + 3 < len(v) <= 32:
        try:  # numbers read back from CSV are text: round them too ("0.7234234234" → "0.723")
            x = float(v)
        except ValueError:
            return v
        if math.isfinite(x) and v.strip().lower() not in ("inf", "nan", "infinity"):
            return f"{x:.{digits}g}" if abs(x) >= 10 ** digits or (x != 0 and abs(x) < 10 ** -digits) \
                else f"{x:.{digits}f}"
        return v
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x, digits) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_fmt(x, digits)}" for k, x in v.items())
    return "" if v is None else str(v)


def _models_in(obj: Any, found: list[dict[str, Any]]) -> None:
    """Collect model name / sha256 / demo from any nesting the task results use."""
    if isinstance(obj, dict):
        m = obj.get("model")
        if isinstance(m, dict) and ("sha256" in m or "name" in m):
            found.append({"model": m.get("label") or m.get("name"), "sha256": m.get("sha256", ""),
                          "demo": bool(m.get("demo", False))})
        elif isinstance(m, str) and ("model_sha256" in obj or "sha256" in obj):
            found.append({"model": m, "sha256": obj.get("model_sha256") or obj.get("sha256", ""),
                          "demo": bool(obj.get("demo", "demo" in m.lower()))})
        for k, v in obj.items():
            if k != "model":
                _models_in(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _models_in(v, found)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- case content
def _key_images(ct, mask, gradcam, mark: str | None = None, model: str = "") -> list[tuple[str, bytes]]:
    """CT key image (slice of largest tumor area, W400/L40) with the segment outline, and the
    Grad-CAM overlay on the same slice when given (colour bar, orientation letters, model name);
    both carry the SYNTHETIC/demo ``mark``."""
    from .plots import _plt, orientation_letters, plot_gradcam, stamp

    plt = _plt()
    arr = np.asarray(ct.array, dtype=float)
    m = None if mask is None else np.asarray(mask.array) > 0
    if m is not None and m.shape != arr.shape:
        log.warning("mask grid %s differs from CT %s: outline left out", m.shape, arr.shape)
        m = None
    k = int(np.argmax(m.sum(axis=(1, 2)))) if m is not None and m.any() else arr.shape[0] // 2
    sy, sx = float(ct.spacing_xyz[1]), float(ct.spacing_xyz[0])
    aspect = sy / sx
    out = []
    fig, ax = plt.subplots(figsize=(5, 5 * arr.shape[1] * aspect / arr.shape[2]))
    ax.imshow(arr[k], cmap="gray", vmin=40 - 200, vmax=40 + 200, aspect=aspect)
    if m is not None and m[k].any():
        ax.contour(m[k].astype(float), levels=[0.5], colors=["#ff3030"], linewidths=1.2)
    ax.set_title(f"CT slice {k} (W400/L40)" + (", tumor outline" if m is not None and m[k].any() else ""))
    letters = orientation_letters(ct.direction)
    for where, (x, y, ha, va) in {"top": (0.5, 0.98, "center", "top"), "bottom": (0.5, 0.02, "center", "bottom"),
                                  "left": (0.02, 0.5, "left", "center"), "right": (0.98, 0.5, "right", "center")}.items():
        ax.text(x, y, letters[where], transform=ax.transAxes, ha=ha, va=va, color="yellow", fontsize=11,
                weight="bold")
    ax.axis("off")
    out.append(("CT key image", _png(stamp(fig, mark))))
    if gradcam is not None:
        g = np.asarray(gradcam.array, dtype=float)
        if g.shape == arr.shape:
            fig = plot_gradcam(arr[k], g[k], m[k] if m is not None else None, direction=ct.direction,
                               spacing_xy=(sx, sy), model=model, title=f"Grad-CAM, slice {k}", mark=mark)
            out.append(("Grad-CAM overlay", _png(fig)))
        elif g.ndim == 2:
            fig, ax = plt.subplots(figsize=(4.6, 4))
            hm = ax.imshow(g, cmap="jet")
            fig.colorbar(hm, ax=ax, fraction=0.046, pad=0.04).set_label("Grad-CAM", fontsize=8)
            ax.set_title("Grad-CAM (ROI)" + (f"\nmodel: {model}" if model else ""), fontsize=8)
            ax.axis("off")
            out.append(("Grad-CAM overlay", _png(stamp(fig, mark))))
        else:
            log.warning("Grad-CAM grid %s differs from CT %s: left out", g.shape, arr.shape)
    return out


def _load_volume(path: Path):
    from ..io import read_image

    try:
        return read_image(path)
    except Exception as e:  # noqa: BLE001 - a damaged optional part must not stop the report
        log.warning("cannot read %s: %s", path, e)
        return None


def gather_case(case_dir: str | Path, ct=None, mask=None, gradcam=None, case_id: str | None = None,
                synthetic: bool | None = None) -> dict[str, Any]:
    """Read what a case result folder holds into one dict (the report's content)."""
    d = Path(case_dir)
    if not d.is_dir():
        raise InputError("case result folder does not exist", d)
    meta = _read_json(d / "case.json") or {}
    from ..case_files import find_result

    def part(task: str) -> dict[str, Any] | None:  # one naming scheme (case_files), older names still read
        p = find_result(d, task)
        return _read_json(p) if p is not None else None

    seg = part("segmentation")
    parts: dict[str, Any] = {"segmentation": seg, "radiomics": part("risk-radiomics"), "cnn": part("risk-cnn"),
                             "fusion": part("fusion")}
    lesions = _read_csv(d / "lesions.csv")
    if lesions is None and seg and isinstance(seg.get("lesions"), list):
        lesions = seg["lesions"]
    if ct is None:
        p = next((d / n for n in CT_NAMES if (d / n).is_file()), None)
        ct = _load_volume(p) if p else None
    if mask is None and (d / "mask.nrrd").is_file():
        mask = _load_volume(d / "mask.nrrd")
    if gradcam is None and (d / "gradcam.nrrd").is_file():
        gradcam = _load_volume(d / "gradcam.nrrd")
    return case_from_parts(parts, lesions, ct, mask, gradcam, case_id=case_id or meta.get("case_id") or d.name,
                           synthetic=synthetic if synthetic is not None else (bool(meta["synthetic"])
                                                                               if "synthetic" in meta else None),
                           folder=str(d))


def case_from_parts(parts: dict[str, Any], lesions, ct, mask, gradcam, *, case_id: str,
                    synthetic: bool | None = None, folder: str = "") -> dict[str, Any]:
    """Assemble the report content from task results (used for folders and Slicer scenes).
    ``synthetic=None`` → detected from the CT metadata or the results' own flags."""
    models: list[dict[str, Any]] = []
    _models_in({k: v for k, v in parts.items() if v}, models)
    uniq: dict[Any, dict[str, Any]] = {}
    for m in models:  # one row per model: the same model named with and without its sha256 is one
        prev = uniq.get(m["model"])
        if prev is None or (not prev["sha256"] and m["sha256"]):
            uniq[m["model"]] = {**m, "demo": m["demo"] or bool(prev and prev["demo"])}
        elif m["demo"]:
            prev["demo"] = True
    if synthetic is None:
        synthetic = bool(ct is not None and ct.metadata.get("synthetic")) \
            or any(bool(isinstance(v, dict) and (v.get("synthetic") or (v.get("inputs") or {}).get("synthetic")))
                   for v in parts.values())
    return {"case_id": case_id, "synthetic": bool(synthetic), "parts": parts, "lesions": lesions, "ct": ct,
            "mask": mask, "gradcam": gradcam, "models": list(uniq.values()),
            "demo": any(m["demo"] for m in uniq.values()), "folder": folder}


def _risk_rows(parts: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, _, label in RISK_PARTS:
        r = parts.get(key)
        if not r:
            rows.append({"model": label, "P(high risk)": "not run", "group": "", "threshold": ""})
            continue
        rows.append({"model": label, "P(high risk)": _fmt(r.get("probability_high_risk")),
                     "group": _fmt(r.get("group")), "threshold": _fmt(r.get("threshold"))})
    return rows


def _fusion_rows(f: dict[str, Any] | None) -> tuple[list[dict[str, Any]], list[str]]:
    if not f:
        return [], []
    rows = []
    for label, r in (("CT + CTC fusion", f.get("fusion")), ("CT only", f.get("ct_only"))):
        if not r:
            rows.append({"model": label, "P(malignant)": "not available", "call": "", "top classes": ""})
            continue
        top = "; ".join(f"{t.get('display') or t.get('class')} {_fmt(t.get('probability'), 2)}"
                        for t in r.get("top3", []))
        rows.append({"model": label, "P(malignant)": _fmt(r.get("p_malignant")), "call": _fmt(r.get("call")),
                     "top classes": top})
    inp = f.get("inputs") or {}
    notes = [f"CTC {inp.get('ctc')} {f.get('ctc_unit', '')}".strip()] if inp.get("ctc") is not None else []
    return rows, notes + [str(w) for w in f.get("warnings", [])]


# ----------------------------------------------------------------------------- HTML / PDF
_CSS = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}"
        "th{background:#eee}.banner{background:#b00020;color:#fff;padding:.5em 1em;font-weight:bold;margin:.3em 0}"
        ".notrun{color:#888;font-style:italic}img{max-width:100%}figure{display:inline-block;margin:.5em}")


def _table_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="notrun">none</p>'
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img_html(title: str, png: bytes) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


class _Doc:
    """Sections of (title, html-ish blocks) rendered to both HTML and PDF."""

    def __init__(self, title: str, banners: list[str]):
        self.title, self.banners = title, banners
        self.sections: list[tuple[str, list[tuple[str, Any]]]] = []

    def section(self, title: str) -> list[tuple[str, Any]]:
        blocks: list[tuple[str, Any]] = []
        self.sections.append((title, blocks))
        return blocks

    def html(self) -> str:
        parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                 f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"]
        parts += [f'<div class="banner">{html.escape(b)}</div>' for b in self.banners]
        for title, blocks in self.sections:
            parts.append(f'<section><h2>{html.escape(title)}</h2>')
            for kind, val in blocks:
                if kind == "text":
                    parts.append(f"<p>{html.escape(val)}</p>")
                elif kind == "notrun":
                    parts.append(f'<p class="notrun">{html.escape(val)}</p>')
                elif kind == "table":
                    parts.append(_table_html(val))
                elif kind == "image":
                    parts.append(_img_html(*val))
            parts.append("</section>")
        parts.append(f"<footer><small>{html.escape(json.dumps(provenance()))}</small></footer></body></html>")
        return "".join(parts)

    def pdf(self, path: Path) -> None:
        import matplotlib.image as mpimg
        from matplotlib.backends.backend_pdf import PdfPages

        from .plots import _plt

        plt = _plt()
        with atomic_path(path) as tmp, PdfPages(tmp) as pdf:
            fig, y = self._page(plt, first=True)
            for title, blocks in self.sections:
                fig, y = self._need(plt, pdf, fig, y, 0.06)
                fig.text(0.06, y, title, fontsize=13, weight="bold")
                y -= 0.035
                for kind, val in blocks:
                    if kind in ("text", "notrun"):
                        lines = _wrap(val, 100)
                        fig, y = self._need(plt, pdf, fig, y, 0.022 * len(lines))
                        for ln in lines:
                            fig.text(0.07, y, ln, fontsize=8.5, style="italic" if kind == "notrun" else "normal")
                            y -= 0.022
                    elif kind == "table" and val:
                        cols: list[str] = []
                        for r in val:
                            cols += [c for c in r if c not in cols]
                        head, rows_txt, widths = _wrapped_table(cols, val)
                        line_h = 0.0125
                        heights = [max(len(x) for x in r) for r in rows_txt]
                        start = 0
                        while start < len(rows_txt):  # as many rows as fit on the page
                            hh = line_h * max(len(x) for x in head) + 0.004
                            end = start
                            while end < len(rows_txt) and (end == start or hh + line_h * heights[end] + 0.004 < 0.8):
                                hh += line_h * heights[end] + 0.004
                                end += 1
                            fig, y = self._need(plt, pdf, fig, y, hh)
                            ax = fig.add_axes([0.06, y - hh, 0.88, hh])
                            ax.axis("off")
                            t = ax.table(cellText=[["\n".join(x) for x in r] for r in rows_txt[start:end]],
                                         colLabels=["\n".join(x) for x in head], colWidths=widths,
                                         loc="upper left", cellLoc="left", bbox=[0, 0, 1, 1])
                            t.auto_set_font_size(False)
                            t.set_fontsize(6.5)
                            units = [max(len(x) for x in head)] + heights[start:end]
                            tot = sum(units)
                            for (ri, _ci), cell in t.get_celld().items():
                                cell.set_height(units[ri] / tot)
                            y -= hh + 0.02
                            start = end
                    elif kind == "image":
                        img = mpimg.imread(io.BytesIO(val[1]), format="png")
                        h = min(0.42, 0.88 * img.shape[0] / img.shape[1] * 8.27 / 11.69)
                        fig, y = self._need(plt, pdf, fig, y, h + 0.02)
                        ax = fig.add_axes([0.06, y - h, 0.88, h])
                        ax.imshow(img)
                        ax.axis("off")
                        y -= h + 0.02
                y -= 0.015
            pdf.savefig(fig)
            plt.close(fig)

    def _page(self, plt, first: bool = False):
        fig = plt.figure(figsize=(8.27, 11.69))
        y = 0.95
        if first:
            fig.text(0.06, y, self.title, fontsize=16, weight="bold")
            y -= 0.04
            for b in self.banners:
                fig.text(0.06, y, b, fontsize=11, weight="bold", color="white",
                         bbox={"facecolor": "#b00020", "edgecolor": "none"})
                y -= 0.035
        return fig, y

    def _need(self, plt, pdf, fig, y, h):
        if y - h < 0.04:
            pdf.savefig(fig)
            plt.close(fig)
            return self._page(plt)
        return fig, y


def _wrapped_table(cols: list[str], rows: list[dict[str, Any]], total_chars: int = 120):
    """Header and cells wrapped into lines (nothing cut off), with relative column widths:
    each column gets a share of ``total_chars`` by its longest entry (at least 6, at most 48)."""
    texts = [[_fmt(r.get(c)) for c in cols] for r in rows]
    longest = [max([len(str(c))] + [len(t[i]) for t in texts]) for i, c in enumerate(cols)]
    share = [min(48, max(6, n)) for n in longest]
    scale = min(1.0, total_chars / max(1, sum(share)))
    width = [max(6, int(w * scale)) for w in share]
    head = [_wrap(str(c), w) for c, w in zip(cols, width)]
    cells = [[_wrap(t, w) if t else [""] for t, w in zip(row, width)] for row in texts]
    tot = sum(width)
    return head, cells, [w / tot for w in width]


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(str(text), width) or [""]


def _write(doc: _Doc, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    h = atomic_write_text(out_dir / f"{stem}.html", doc.html())
    p = out_dir / f"{stem}.pdf"
    doc.pdf(p)
    return [h, p]


# ----------------------------------------------------------------------------- public API
def write_case_report(case_dir: str | Path, out_dir: str | Path, *, ct=None, mask=None, gradcam=None,
                      case_id: str | None = None, synthetic: bool | None = None) -> list[Path]:
    """Per-case report (report.html + report.pdf in ``out_dir``) from a case result folder."""
    c = gather_case(case_dir, ct=ct, mask=mask, gradcam=gradcam, case_id=case_id, synthetic=synthetic)
    return render_case_report(c, Path(out_dir))


def render_case_report(c: dict[str, Any], out_dir: Path) -> list[Path]:
    banners = ([SYNTHETIC_TEXT] if c["synthetic"] else []) + ([DEMO_TEXT] if c["demo"] else [])
    doc = _Doc(f"MediastinalAI case report — {c['case_id']}", banners)
    s = doc.section("Key image")
    if c["ct"] is not None:
        from .plots import mark_text

        cnn = c["parts"].get("cnn") or {}
        cnn_model = cnn.get("model") if isinstance(cnn.get("model"), str) else (cnn.get("model") or {}).get("name", "")
        for title, png in _key_images(c["ct"], c["mask"], c["gradcam"], mark=mark_text(c["synthetic"], c["demo"]),
                                      model=cnn_model or ""):
            s.append(("image", (title, png)))
    else:
        s.append(("notrun", "no CT available (put ct.nrrd in the case folder or pass the CT)"))
    if c["gradcam"] is None:
        s.append(("notrun", "Grad-CAM: not run"))
    s = doc.section("Segmentation")
    seg = c["parts"]["segmentation"]
    if seg is None and c["lesions"] is None:
        s.append(("notrun", "segmentation: not run"))
    else:
        if seg:
            s.append(("text", f"{seg.get('n_lesions', len(c['lesions'] or []))} lesion(s); "
                              f"threshold {_fmt(seg.get('threshold'))}"))
        s.append(("table", [{k: v for k, v in r.items() if k != "voxels"} for r in (c["lesions"] or [])]))
    s = doc.section("Risk probabilities")
    if not any(c["parts"].get(k) for k, _, _ in RISK_PARTS):
        s.append(("notrun", "radiomics and CNN risk: not run"))
    s.append(("table", _risk_rows(c["parts"])))
    feats = (c["parts"].get("radiomics") or {}).get("features")
    if isinstance(feats, list) and feats and isinstance(feats[0], dict) and "contribution" in feats[0]:
        top = sorted(feats, key=lambda f: -abs(float(f.get("contribution") or 0.0)))[:10]
        s.append(("text", "Radiomics features with the largest contributions "
                          f"({(c['parts']['radiomics'].get('contribution_method') or 'model-specific')[:120]}):"))
        s.append(("table", [{"feature": f.get("feature"), "value": f.get("value"),
                             "contribution": f.get("contribution")} for f in top]))
    s = doc.section("CTC fusion")
    rows, notes = _fusion_rows(c["parts"]["fusion"])
    if not rows:
        s.append(("notrun", "CT + CTC fusion: not run"))
    else:
        s.append(("table", rows))
        for n in notes:
            s.append(("text", n))
    s = doc.section("Models")
    if c["models"]:
        s.append(("table", [{"model": m["model"], "sha256": m["sha256"], "demo": DEMO_TEXT if m["demo"] else "no"}
                            for m in c["models"]]))
    else:
        s.append(("notrun", "no model results in this folder"))
    src = _source_folder(c["folder"], c["case_id"])
    if src:
        s.append(("text", f"Source: {src}"))
    return _write(doc, out_dir, "report")


def _source_folder(folder: str, case_id: str) -> str:
    """Where the case's results live for the reader of the report. The batch runner writes a
    case in ``<out>/.work/<case>.<random>`` and then publishes it as ``<out>/cases/<case>``: the
    report names the published folder, never the temporary one."""
    if not folder:
        return ""
    p = Path(folder)
    if ".work" in p.parts:
        i = p.parts.index(".work")
        return str(Path(*p.parts[:i]) / "cases" / case_id)
    return str(p)


def write_cohort_report(eval_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Cohort report (cohort_report.html/.pdf) from an ``evaluate`` output folder."""
    d = Path(eval_dir)
    summary = _read_json(d / "summary.json")
    if not summary or "_error" in summary:
        raise InputError("not an evaluation folder: summary.json missing or unreadable "
                         "(run `mediastinal-ai evaluate ... --out DIR` first)", d)
    out = Path(out_dir) if out_dir else d
    banners = ([SYNTHETIC_TEXT] if summary.get("synthetic") else []) + ([DEMO_TEXT] if summary.get("demo") else [])
    doc = _Doc(f"MediastinalAI cohort report — {summary.get('title', d.name)}", banners)
    s = doc.section("Cohort")
    s.append(("text", f"{summary.get('n')} cases ({summary.get('n_pos')} positive, {summary.get('n_neg')} negative); "
                      f"labels: {summary.get('label_col')}; predictions: {summary.get('predictions')}"))
    if summary.get("table1"):
        s.append(("text", f"Baseline characteristics by {summary['table1']['group_col']} (table1.csv): "
                          "mean ± SD when Shapiro–Wilk keeps normality in every group, else median (IQR)"))
        s.append(("table", [{k: _fmt(v) for k, v in r.items()} for r in summary["table1"]["rows"]]))
    s = doc.section("Discrimination (AUC, 95% CI)")
    s.append(("table", [{k: v for k, v in r.items() if k != "caveats"} for r in summary.get("auc", [])]))
    for r in summary.get("auc", []):
        for c in r.get("caveats", []):
            s.append(("text", f"Caution ({r['model']}): {c}"))
    if summary.get("multiclass"):
        s.append(("text", f"Multi-class macro AUC {_fmt(summary['multiclass']['macro_auc'])}"))
        s.append(("table", summary["multiclass"]["per_class"]))
    s = doc.section("Model comparisons (paired DeLong)")
    if summary.get("comparisons"):
        s.append(("table", [{**r, "p": f"{r['p']:.3g}"} for r in summary["comparisons"]]))
    else:
        s.append(("notrun", "one model only: no comparison"))
    if summary.get("mcnemar"):
        s.append(("text", "Paired accuracy / sensitivity / specificity at each model's threshold (McNemar)"))
        s.append(("table", [{**r, "p": f"{r['p']:.3g}"} for r in summary["mcnemar"]]))
    rs = summary.get("reader_study")
    if rs:
        s = doc.section("Reader study")
        s.append(("text", f"Readers vs model {rs.get('model_column', '')}: AUC (DeLong 95% CI), sensitivity and "
                          "specificity (Wilson 95% CI); paired DeLong tests"))
        s.append(("table", rs["readers"]))
        s.append(("table", [{**r, "p": f"{r['p']:.3g}"} for r in rs["tests"]]))
        rt = summary.get("reader_table")
        if rt:
            s.append(("text", "Per reader (Table 3 layout): accuracy, sensitivity, specificity, PPV, NPV, AUC; "
                              "group rows are the mean over the group's readers"))
            keep = ("reader", "group", "condition", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "auc")
            s.append(("table", [{k: _fmt(r.get(k)) for k in keep} for r in rt["rows"]]))
            if rt.get("group_means"):
                s.append(("table", [{k: _fmt(v) for k, v in r.items()} for r in rt["group_means"]]))
            if rt.get("comparisons"):
                s.append(("table", [{k: _fmt(v) for k, v in r.items()} for r in rt["comparisons"]]))
    s = doc.section("Threshold metrics (95% CI)")
    s.append(("text", summary.get("threshold_note", "")))
    for name, rows in (summary.get("threshold_metrics") or {}).items():
        s.append(("text", name))
        s.append(("table", rows))
    s = doc.section("Calibration and decision curve")
    if summary.get("brier"):
        s.append(("table", [{"model": k, "Brier": v} for k, v in summary["brier"].items()]))
    else:
        s.append(("notrun", "scores are not probabilities in [0, 1]: calibration not computed"))
    s = doc.section("Plots")
    order = ("roc", "confusion", "calibration", "decision_curve", "froc", "training_curves")
    rank = {n: i for i, n in enumerate(order)}
    for p in sorted(d.glob("*.png"), key=lambda q: (next((rank[n] for n in order if q.stem.startswith(n)),
                                                          len(order)), q.stem)):
        s.append(("image", (p.stem.replace("_", " "), p.read_bytes())))
    s = doc.section("Per-case table")
    rows = _read_csv(d / "predictions.csv") or []
    s.append(("table", rows[:500]))
    if len(rows) > 500:
        s.append(("text", f"first 500 of {len(rows)} cases shown; see predictions.csv"))
    return _write(doc, out, "cohort_report")
