"""Feature extraction: one case (Volume in, feature dict out) and a whole cohort.

pyradiomics is the engine; our :class:`~mediastinal_ai.volume.Volume` is converted to
SimpleITK only here, at the edge. Cohort extraction runs cases in a process pool (each case
is independent), caches each case's features atomically under ``<out>/cache/`` keyed by the
parameter fingerprint (a rerun skips finished cases; a killed run resumes), and writes one
tidy table: one row per (case, reader), one column per feature.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MediastinalAIError
from ..fileio import atomic_path, atomic_write_json, provenance
from ..progress import CancelToken, ProgressCallback, check, report
from ..volume import Volume
from .params import apply_window, load_params, make_extractor, params_hash, pyradiomics_params

log = logging.getLogger(__name__)

ID_COLUMNS = ("case_id", "reader")
# reader "1r": reader 1's repeat outline (intra-observer ICC); absent for most cases, not an error
READER_COLUMNS = {"1": "mask", "2": "mask_reader2", "1r": "mask_reader1_repeat"}


# ----------------------------------------------------------------------------- checks
def check_mask(ct: Volume, mask: Volume, source: str | Path | None = None) -> np.ndarray:
    """The boolean tumour mask, or a clear :class:`InputError` for masks pyradiomics cannot use."""
    if mask.shape != ct.shape or not mask.same_geometry(ct, tol=1e-3):
        if not _overlaps(ct, mask):
            raise InputError("the mask lies outside the image (no overlap with the CT's extent)", source)
        raise InputError(
            f"mask geometry (shape {mask.shape}, spacing {tuple(round(s, 3) for s in mask.spacing_xyz)}, "
            f"origin {tuple(round(o, 2) for o in mask.origin_xyz)}) differs from the CT's (shape {ct.shape}, "
            f"spacing {tuple(round(s, 3) for s in ct.spacing_xyz)}, origin "
            f"{tuple(round(o, 2) for o in ct.origin_xyz)}); resample the mask onto the CT grid", source)
    fg = np.asarray(mask.array) > 0
    n = int(fg.sum())
    if n == 0:
        raise InputError("the mask is empty (no tumour voxel)", source)
    if n == 1:
        raise InputError("the mask has a single voxel: too small for shape and texture features", source)
    return fg


def _overlaps(ct: Volume, mask: Volume) -> bool:
    def box(v: Volume) -> tuple[np.ndarray, np.ndarray]:
        nz, ny, nx = v.shape
        corners = np.array([[i, j, k] for i in (0, nx - 1) for j in (0, ny - 1) for k in (0, nz - 1)], float)
        p = v.index_to_lps(corners)
        return p.min(0), p.max(0)

    fg = np.argwhere(np.asarray(mask.array) > 0)
    if fg.size:
        pts = mask.index_to_lps(fg[:, ::-1].astype(float))
        lo_m, hi_m = pts.min(0), pts.max(0)
    else:
        lo_m, hi_m = box(mask)
    lo_c, hi_c = box(ct)
    tol = np.asarray(ct.spacing_xyz) / 2
    return bool(np.all(hi_m >= lo_c - tol) and np.all(lo_m <= hi_c + tol))


# ----------------------------------------------------------------------------- one case
def extract_features(ct: Volume, mask: Volume, params: str | Path | dict[str, Any] | None = None, *,
                     extractor: Any = None, source: str | Path | None = None) -> dict[str, float]:
    """pyradiomics features of one tumour, ``{feature_name: value}`` (diagnostics dropped).

    The CT is windowed (clipped) as the parameter file says, then handed to pyradiomics
    with the mask as label 1. ``extractor`` lets a caller reuse a configured extractor.
    """
    p = load_params(params)
    image, label = sitk_inputs(ct, mask, p, source)
    ex = extractor if extractor is not None else make_extractor(p)
    from .fast import fast_extraction

    try:
        with fast_extraction():  # same features, bit for bit; see fast.py
            raw = ex.execute(image, label, label=1)
    except (ValueError, RuntimeError, IndexError) as e:  # pyradiomics' own mask checks
        raise InputError(f"pyradiomics could not use this image/mask: {e}", source) from e
    return _feature_values(raw)


def sitk_inputs(ct: Volume, mask: Volume, params: dict[str, Any], source: str | Path | None = None) -> tuple[Any, Any]:
    """The windowed CT and the label-1 mask as pyradiomics receives them (checked first)."""
    fg = check_mask(ct, mask, source)
    import SimpleITK as sitk

    image = apply_window(ct, params).to_sitk()
    label = mask.with_array(fg.astype(np.uint8), units="label").to_sitk()
    return image, sitk.Cast(label, sitk.sitkUInt8)


def _feature_values(raw: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in raw.items():
        if k.startswith("diagnostics_"):
            continue
        out[k] = float(np.asarray(v).item())
    return out


# ----------------------------------------------------------------------------- cohort
def _cache_file(cache_dir: Path, case_id: str, reader: str) -> Path:
    from ..batch.discover import safe_case_id

    if safe_case_id(case_id) != case_id:  # '../x' would write outside --out
        raise InputError(f"case id {case_id!r} is not a plain name (letters, digits, '._-'; no folders)")
    return cache_dir / f"{case_id}__reader{reader}.json"


def _extract_job(ct_path: str, mask_path: str, params: dict[str, Any], cache: str, case_id: str,
                 reader: str, phash: str) -> dict[str, Any]:
    """In process (one worker): read files, extract, write the case's cache atomically. Errors
    are returned, not raised, so one bad case does not stop the cohort."""
    from ..io import read_ct, read_mask

    try:
        ct = read_ct(ct_path)
        mask = read_mask(mask_path, ct, allow_empty=True)
        feats = extract_features(ct, mask, params, source=mask_path)
        rec = {"case_id": case_id, "reader": reader, "params_hash": phash, "features": feats}
        atomic_write_json(cache, rec)
        return {"case_id": case_id, "reader": reader, "ok": True}
    except MediastinalAIError as e:
        return {"case_id": case_id, "reader": reader, "ok": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - reported per case, the cohort goes on
        return {"case_id": case_id, "reader": reader, "ok": False, "error": f"{type(e).__name__}: {e}"}


def _failure(case_id: str, reader: str, e: BaseException) -> dict[str, Any]:
    msg = str(e) if isinstance(e, MediastinalAIError) else f"{type(e).__name__}: {e}"
    return {"case_id": case_id, "reader": reader, "ok": False, "error": msg}


def _prepare_job(ct_path: str, masks: list[tuple[str, str]], params: dict[str, Any], case_id: str,
                 folder: str) -> list[dict[str, Any]]:
    """Worker: read the CT once for all of the case's reader masks, and run pyradiomics' own
    loading and resampling once per mask (:func:`.fast.prepare`); the prepared pairs go to
    ``folder`` for the parts (:func:`_part_job`). One result per reader; errors returned."""
    from ..io import read_ct, read_mask
    from .fast import prepare, save_prepared

    try:
        ct = read_ct(ct_path)
    except Exception as e:  # noqa: BLE001 - every reader of this case fails with the CT's reason
        return [_failure(case_id, r, e) for r, _ in masks]
    out = []
    pp = pyradiomics_params(params)
    for r, mask_path in masks:
        try:
            image, label = sitk_inputs(ct, read_mask(mask_path, ct, allow_empty=True), params, mask_path)
            try:
                pair = prepare(image, label, pp)
            except (ValueError, RuntimeError, IndexError) as e:  # pyradiomics' own mask checks
                raise InputError(f"pyradiomics could not use this image/mask: {e}", mask_path) from e
            stem = str(Path(folder) / f"{case_id}__reader{r}")
            out.append({"case_id": case_id, "reader": r, "ok": True, "stem": stem, "source": mask_path,
                        **save_prepared(stem, *pair)})
        except Exception as e:  # noqa: BLE001 - reported per case, the cohort goes on
            out.append(_failure(case_id, r, e))
    return out


_LOADED: dict[str, Any] = {}  # the worker's last few prepared pairs (.fast.PreparedPair), by file stem
_LOADED_MAX = 4


def _part_job(stem: str, part: dict[str, Any], case_id: str, reader: str, source: str) -> dict[str, Any]:
    """Worker: one image-type part (:func:`.fast.pieces`) of a prepared (case, reader)."""
    from .fast import PreparedPair, fast_extraction, load_prepared, prepared_extractor

    try:
        pair = _LOADED.pop(stem, None) or PreparedPair(*load_prepared(stem))
        _LOADED[stem] = pair  # most recent last
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        try:
            with fast_extraction(), pair.checked_once():
                raw = prepared_extractor(part).execute(pair.image, pair.mask, label=1)
        except (ValueError, RuntimeError, IndexError) as e:  # pyradiomics' own mask checks
            raise InputError(f"pyradiomics could not use this image/mask: {e}", source) from e
        return {"case_id": case_id, "reader": reader, "ok": True, "features": _feature_values(raw)}
    except Exception as e:  # noqa: BLE001 - reported per case, the cohort goes on
        return _failure(case_id, reader, e)


def extract_cohort(manifest: str | Path, out_dir: str | Path, params: str | Path | dict[str, Any] | None = None, *,
                   readers: Sequence[str] = ("1", "2"), workers: int | None = None, case_ids: Sequence[str] | None = None,
                   progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                   table_name: str = "features", split_cases: bool = True) -> dict[str, Any]:
    """Extract every case of a manifest (reader 1 = ``mask``, reader 2 = ``mask_reader2``).

    Writes ``<out>/<table_name>.csv`` and ``.parquet`` (columns ``case_id, reader, <features>``)
    and ``<out>/<table_name>.json`` (parameters, package versions, per-case errors). Returns
    ``{"table": DataFrame, "csv", "parquet", "sidecar", "errors", "n_extracted", "n_cached"}``.

    With several workers each case is prepared once and each (case, reader) cut into parts by
    image type that the workers share, longest first (:func:`_run_pool`; ``split_cases=False``:
    one part per pair, kept for the benchmark's attribution). Features are identical either
    way, bit for bit (``benchmarks/radiomics_extraction.py``).
    """
    import pandas as pd

    from ..cohort import read_manifest

    p = load_params(params)
    phash = params_hash(p)
    out = Path(out_dir)
    cache_dir = out / "cache" / phash
    cache_dir.mkdir(parents=True, exist_ok=True)
    cases = read_manifest(manifest)
    if case_ids is not None:
        wanted = set(case_ids)
        cases = [c for c in cases if c.case_id in wanted]
    jobs, skipped_no_mask = [], []
    for c in cases:
        for r in readers:
            mp = getattr(c, READER_COLUMNS[str(r)])
            if mp is None:
                if str(r) != "1r":
                    skipped_no_mask.append((c.case_id, str(r)))
                continue
            jobs.append((str(c.ct), str(mp), c.case_id, str(r)))
    if not jobs:
        raise InputError("no case has a mask for the requested readers", manifest)
    todo = [j for j in jobs if not _cache_file(cache_dir, j[2], j[3]).is_file()]
    n_cached = len(jobs) - len(todo)
    workers = max(1, int(workers or os.cpu_count() or 1))
    errors: list[dict[str, Any]] = []
    done = n_cached
    report(progress, done / len(jobs), f"{n_cached} of {len(jobs)} extractions cached")
    if todo:
        log.info("extracting %d (case, reader) pairs on %d worker(s); %d cached", len(todo), workers, n_cached)
        pdict = dict(p)
        if workers == 1:
            for ct, mp, cid, r in todo:
                check(cancel)
                res = _extract_job(ct, mp, pdict, str(_cache_file(cache_dir, cid, r)), cid, r, phash)
                done += 1
                _note(res, errors, progress, done, len(jobs))
        else:
            def done_pair(res: dict[str, Any]) -> None:
                nonlocal done
                done += 1
                _note(res, errors, progress, done, len(jobs))

            _run_pool(todo, p, workers, split_cases, cache_dir, phash, done_pair, cancel)
    rows = []
    for _, _, cid, r in jobs:
        f = _cache_file(cache_dir, cid, r)
        if f.is_file():
            rec = json.loads(f.read_text(encoding="utf-8"))
            rows.append({"case_id": cid, "reader": r, **rec["features"]})
    if not rows:
        raise InputError(f"no case could be extracted; first error: {errors[0]['error'] if errors else '?'}", manifest)
    table = pd.DataFrame(rows)
    csv_path, pq_path = write_table(table, out / f"{table_name}.csv")
    sidecar = atomic_write_json(out / f"{table_name}.json", {
        "manifest": str(manifest), "params": p, "params_hash": phash, "readers": list(readers),
        "n_rows": len(table), "n_features": table.shape[1] - len(ID_COLUMNS), "errors": errors,
        "skipped_no_mask": [{"case_id": c, "reader": r} for c, r in skipped_no_mask],
        "packages": package_versions(), **provenance()})
    report(progress, 1.0, f"features of {len(table)} (case, reader) rows written")
    return {"table": table, "csv": csv_path, "parquet": pq_path, "sidecar": sidecar, "errors": errors,
            "n_extracted": len(todo) - len(errors), "n_cached": n_cached}


def _run_pool(todo: list[tuple[str, str, str, str]], p: dict[str, Any], workers: int, split_cases: bool,
              cache_dir: Path, phash: str, done_pair: Any, cancel: CancelToken | None) -> None:
    """The (case, reader) pairs of ``todo`` on ``workers`` processes.

    Each case is first prepared once (CT read once for all its readers; pyradiomics' loading and
    resampling once per mask), then cut into its image-type parts (:func:`.fast.pieces`; one
    part per pair with ``split_cases=False``). The pool is fed one task per free worker,
    preparations first, then always the part with the longest estimated CPU time among the
    prepared pairs (:func:`.fast.part_cost`), so a large tumour's shape descriptors start early
    instead of running alone at the end. At most ``4 × workers`` pairs are open at a time
    (bounded temporary disk). The parts' features are merged in pyradiomics' order and cached
    per pair as soon as its last part is back."""
    import heapq
    import shutil
    import tempfile

    from radiomics import featureextractor  # noqa: F401 - imported once here, inherited by forked workers

    from .fast import merge_parts, part_cost, pieces

    pp = pyradiomics_params(p)
    if split_cases:
        parts = pieces(pp)
    else:
        whole = pieces(pp)
        parts = [{"params": pp, "shape": any(q["shape"] for q in whole), "images": sum(q["images"] for q in whole)}]
    cases: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for ct, mp, cid, r in todo:
        cases.setdefault((cid, ct), []).append((r, mp))
    queue = list(cases.items())
    window = 4 * workers
    folder = tempfile.mkdtemp(prefix="mediastinal-radiomics-")
    ready: list[tuple[float, int, str, int]] = []  # (-cost, seq, pair key, part index)
    open_pairs: dict[str, dict[str, Any]] = {}
    seq = 0
    pending: dict[Any, tuple[str, Any]] = {}

    def drop(key: str) -> None:
        info = open_pairs.pop(key)
        for suffix in (".image.npy", ".mask.npy", ".json"):
            Path(info["stem"] + suffix).unlink(missing_ok=True)

    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            while queue or ready or pending:
                while len(pending) < workers:
                    n_open = len(open_pairs) + sum(len(v[1][1]) for v in pending.values() if v[0] == "prepare")
                    if queue and (not ready or n_open < window):
                        (cid, ct), masks = queue.pop(0)
                        fut = pool.submit(_prepare_job, ct, masks, p, cid, folder)
                        pending[fut] = ("prepare", (cid, masks))
                    elif ready:
                        _, _, key, k = heapq.heappop(ready)
                        info = open_pairs.get(key)
                        if info is None or info.get("failed"):  # another part of this pair failed
                            continue
                        fut = pool.submit(_part_job, info["stem"], parts[k]["params"], info["case_id"], info["reader"],
                                          info["source"])
                        info["running"] += 1
                        pending[fut] = ("part", (key, k))
                    else:
                        break
                finished, _ = wait(set(pending), timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in finished:
                    kind, what = pending.pop(fut)
                    res = fut.result()
                    if kind == "prepare":
                        for one in res:
                            if not one["ok"]:
                                done_pair(one)
                                continue
                            key = f"{one['case_id']}\0{one['reader']}"
                            open_pairs[key] = {**one, "got": {}, "running": 0}
                            for k, q in enumerate(parts):
                                heapq.heappush(ready, (-part_cost(q, one["voxels"], one["faces"]), seq, key, k))
                                seq += 1
                        continue
                    key, k = what
                    info = open_pairs.get(key)
                    if info is None:
                        continue
                    info["running"] -= 1
                    if not res["ok"]:
                        info["failed"] = True
                        done_pair(res)
                        if info["running"] == 0:
                            drop(key)
                        continue
                    if info.get("failed"):
                        if info["running"] == 0:
                            drop(key)
                        continue
                    info["got"][k] = res["features"]
                    if len(info["got"]) == len(parts):
                        cid, r = info["case_id"], info["reader"]
                        feats = merge_parts([info["got"][i] for i in range(len(parts))], p)
                        atomic_write_json(_cache_file(cache_dir, cid, r), {
                            "case_id": cid, "reader": r, "params_hash": phash, "features": feats})
                        drop(key)
                        done_pair({"case_id": cid, "reader": r, "ok": True})
                check(cancel)
    except BaseException:
        for fut in pending:
            fut.cancel()
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _note(res: dict[str, Any], errors: list[dict[str, Any]], progress: ProgressCallback | None, done: int,
          total: int) -> None:
    if not res["ok"]:
        log.warning("case %s reader %s failed: %s", res["case_id"], res["reader"], res["error"])
        errors.append(res)
    report(progress, done / total, f"{res['case_id']} reader {res['reader']}: {'ok' if res['ok'] else 'FAILED'}")


def write_table(table: Any, csv_path: str | Path) -> tuple[Path, Path | None]:
    """CSV always; Parquet beside it when pyarrow is installed."""
    csv_path = Path(csv_path)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    pq = csv_path.with_suffix(".parquet")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return csv_path, None
    with atomic_path(pq) as tmp:
        table.to_parquet(tmp, index=False)
    return csv_path, pq


def read_table(path: str | Path) -> Any:
    """A feature table written by :func:`extract_cohort` (CSV or Parquet)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError("feature table not found", path)
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"case_id": str,
                                                                                             "reader": str})
    missing = [c for c in ID_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"feature table lacks the columns {missing}", path)
    table["case_id"] = table["case_id"].astype(str)
    table["reader"] = table["reader"].astype(str)
    return table


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("pyradiomics-bhklab", "pyradiomics", "SimpleITK", "numpy", "PyWavelets", "scikit-learn",
                 "imbalanced-learn", "skops"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    from .. import __version__

    out["mediastinal-ai"] = __version__
    return out


# ----------------------------------------------------------------------------- table ↔ parameters
def table_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The ``<stem>.json`` sidecar :func:`extract_cohort` writes beside a feature table, or None."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        d = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"feature table sidecar is unreadable ({e})", side) from e
    return d if isinstance(d, dict) else None


def _image_type_key(name: str) -> str:
    """'LoG' → 'log', 'LBP3D' → 'lbp', 'SquareRoot' → 'squareroot' (the column-name prefix family)."""
    k = name.lower()
    return "lbp" if k.startswith("lbp") else k


def columns_match_params(columns: Sequence[str], params: dict[str, Any]) -> list[str]:
    """Reasons the feature columns cannot come from ``params`` (empty list = consistent).

    Checked from the names alone: the image types (``original_``, ``log-sigma-…``, ``wavelet-…``)
    and the LoG sigmas. Used when a table has no sidecar recording its parameters.
    """
    import re

    feats = [c for c in columns if c not in ID_COLUMNS]
    families = {_image_type_key(re.split(r"[-_]", c, maxsplit=1)[0]) for c in feats}
    wanted = {_image_type_key(t) for t in (params.get("imageType") or {})}
    problems = []
    if families - wanted:
        problems.append(f"the table has {sorted(families - wanted)} features the parameters do not enable")
    if wanted - families:
        problems.append(f"the parameters enable {sorted(wanted - families)} which the table lacks")
    log_cfg = (params.get("imageType") or {}).get("LoG") or {}
    if "log" in families & wanted and log_cfg.get("sigma"):
        have = {m.group(1) for c in feats if (m := re.match(r"log-sigma-([0-9]+-[0-9]+)-mm", c))}
        want = {f"{float(s):.1f}".replace(".", "-") for s in log_cfg["sigma"]}
        if have != want:
            problems.append(f"LoG sigmas differ (table {sorted(have)}, parameters {sorted(want)})")
    return problems


def params_for_table(features: str | Path, params: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    """The parameter set a feature table was extracted with; refuses a mismatch with ``params``.

    Why: ``train-radiomics --features`` used to ignore the table's parameters, so a table
    extracted with the demo settings trained a model whose card named the paper settings, and
    ``predict-radiomics`` then extracted other features than the model had seen — silently.

    * The sidecar (``features.json``) records parameters and hash: ``params=None`` adopts them;
      given ``params`` must have the same hash, or this raises :class:`InputError`.
    * Without a sidecar the parameters cannot be known: ``params`` must be given, and the
      feature names must fit it (image types, LoG sigmas).
    """
    side = table_sidecar(features)
    if side is not None and isinstance(side.get("params"), dict):
        table_p = load_params(side["params"])
        table_hash = params_hash(table_p)
        recorded = side.get("params_hash")
        if recorded and recorded != table_hash:
            raise InputError(f"feature table sidecar is inconsistent: its params_hash {recorded} does not match "
                             f"its parameters ({table_hash}); re-extract the features",
                             Path(features).with_suffix(".json"))
        if params is None:
            log.info("feature table %s: using its extraction parameters (hash %s)", features, table_hash)
            return table_p
        given = load_params(params)
        if params_hash(given) != table_hash:
            raise InputError(
                f"the feature table was extracted with other radiomics parameters (hash {table_hash}, recorded in "
                f"{Path(features).with_suffix('.json').name}) than --params {params} (hash {params_hash(given)}); "
                "a model trained on it would extract different features at prediction time. Re-extract with "
                "these parameters, or omit --params to train with the table's own", features)
        return given
    if params is None:
        raise InputError(f"the feature table has no sidecar ({Path(features).with_suffix('.json').name}) recording "
                         "its extraction parameters; pass --params with the parameter file it was extracted with",
                         features)
    given = load_params(params)
    import pandas as pd

    cols = (list(pd.read_parquet(features).columns) if Path(features).suffix == ".parquet"
            else list(pd.read_csv(features, nrows=0).columns))
    problems = columns_match_params(cols, given)
    if problems:
        raise InputError("the feature table does not fit --params: " + "; ".join(problems), features)
    log.warning("feature table %s has no sidecar: trusting --params (image types and LoG sigmas checked)", features)
    return given
