"""``mediastinal-ai predict-radiomics``: WHO risk of one tumour from CT + mask."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ct", required=True, help="CT (DICOM folder, .nii/.nii.gz, .nrrd, .mha)")
    p.add_argument("--mask", required=True, help="tumour mask on the CT grid")
    p.add_argument("--label", type=int, default=None, help="label value of the tumour in a multi-label mask")
    p.add_argument("--model", default=None, help="model name, card or folder (default: demo-risk-radiomics-svm)")
    p.add_argument("--out", required=True,
                   help="case folder (writes radiomics_result.json in it, beside segment's outputs) or a .json file")


def run(args: argparse.Namespace) -> int:
    from ..case_files import result_path
    from ..fileio import atomic_write_json, source_provenance
    from ..io import read_ct, read_mask
    from .predict import predict_risk

    ct = read_ct(args.ct)
    mask = read_mask(args.mask, reference=ct, label=args.label)
    result = predict_risk(ct, mask, model=args.model, source=args.mask)
    result["source"] = {"ct": str(args.ct), "mask": str(args.mask)}
    result.setdefault("provenance", {}).update(source=source_provenance(ct, args.ct),
                                               mask=source_provenance(path=args.mask),
                                               model_version=result["model"].get("version"))
    out = result_path(args.out, "risk-radiomics")
    atomic_write_json(out, result)
    print(f"P(high risk) = {result['probability_high_risk']:.3f} → {result['group']} risk "
          f"(model {result['model']['label']})")
    for f in sorted(result["features"], key=lambda r: -abs(r["contribution"]))[:10]:
        print(f"  {f['feature']:60s} value {f['value']:12.4g}  contribution {f['contribution']:+.3f}")
    for w in result.get("warnings") or ([result["warning"]] if result.get("warning") else []):
        print(f"warning: {w}")
    print(f"wrote {out}")
    return 0
