"""``mediastinal-ai extract-radiomics``: pyradiomics features for every case of a manifest."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="cohort manifest CSV (case_id, ct, mask[, mask_reader2])")
    p.add_argument("--out", required=True, help="output folder: features.csv/.parquet/.json + cache/")
    p.add_argument("--params", default=None,
                   help="parameter YAML, or 'paper' (default: the published settings) or 'demo' (reduced)")
    p.add_argument("--readers", default="1,2,1r",
                   help="which masks: 1 = mask, 2 = mask_reader2 (inter-observer ICC), 1r = mask_reader1_repeat "
                        "(intra-observer ICC; cases without it are skipped quietly) (default 1,2,1r)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    p.add_argument("--name", default="features", help="table file name stem (default features)")


def run(args: argparse.Namespace) -> int:
    from ..progress import cli_progress
    from .extract import extract_cohort

    readers = tuple(r.strip() for r in args.readers.split(",") if r.strip())
    bad = [r for r in readers if r not in ("1", "2", "1r")]
    if bad:
        from ..errors import InputError

        raise InputError(f"--readers takes 1, 2 and/or 1r, got {bad}")
    _check_case_ids(args.manifest)
    with cli_progress("extract-radiomics") as bar:
        res = extract_cohort(args.manifest, args.out, args.params, readers=readers, workers=args.workers,
                             progress=bar, table_name=args.name)
    t = res["table"]
    print(f"{len(t)} (case, reader) rows × {t.shape[1] - 2} features; {res['n_extracted']} extracted, "
          f"{res['n_cached']} from cache, {len(res['errors'])} failed")
    for e in res["errors"]:
        print(f"  failed: {e['case_id']} reader {e['reader']}: {e['error']}")
    print(f"wrote {res['csv']}" + (f" and {res['parquet']}" if res["parquet"] else "") + f" (+ {res['sidecar']})")
    return 1 if res["errors"] else 0


def _check_case_ids(manifest: str) -> None:
    """Refuse case ids that are not plain folder-safe names before anything is written.

    Why: the feature cache names a file after each case id, so ``../x`` or ``a/b`` would write
    outside ``--out`` (the batch rewrites ids with ``safe_case_id``; here the ids are the keys of
    the feature table, so they are refused rather than silently renamed).
    """
    from ..batch.discover import safe_case_id
    from ..cohort import read_manifest
    from ..errors import InputError

    cases, _errors = read_manifest(manifest, strict=False)  # type: ignore[misc]
    bad = [c.case_id for c in cases if safe_case_id(c.case_id) != c.case_id]
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5]) + (" …" if len(bad) > 5 else "")
        raise InputError(f"{len(bad)} case id(s) are not plain names (letters, digits, '._-'; no folders): {shown}",
                         manifest)
