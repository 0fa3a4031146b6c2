"""``mediastinal-ai predict-fusion``: benign/malignant and lesion class from CT + mask + CTC."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..taxonomy import CTC_UNIT, LESION_SITES, SEXES

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ct", required=True, help="CT (DICOM folder, .nii/.nii.gz, .nrrd, .mha)")
    p.add_argument("--mask", required=True, help="tumor mask on the CT grid")
    # Text, not float: validate_inputs gives the same messages as the Slicer panel.
    p.add_argument("--ctc", required=True, metavar="VALUE", help=f"CTC level in the model's unit (its card's input_schema.units.ctc; default label {CTC_UNIT}) (required)")
    p.add_argument("--age", default=None, help="age in years (optional)")
    p.add_argument("--sex", default=None, help=f"one of {', '.join(SEXES)} (optional)")
    p.add_argument("--site", default=None, help=f"lesion site: {', '.join(LESION_SITES)} (optional)")
    p.add_argument("--model", default=None, help="fusion model name, card or folder (default: demo-fusion-dmfn)")
    p.add_argument("--ct-only-model", default=None,
                   help="CT-only baseline (default: the one trained with the fusion model, named in its card)")
    p.add_argument("--no-ct-only", action="store_true", help="skip the CT-only side-by-side prediction")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--out", required=True,
                   help="case folder (writes fusion_result.json in it, beside segment's outputs) or a .json file")


def run(args: argparse.Namespace) -> int:
    from ..anatomy import ChestAnatomy
    from ..fileio import atomic_write_json, provenance, source_provenance
    from ..io import read_ct, read_mask
    from ..nn_common import pick_device
    from .predict import predict_fusion
    from .schema import validate_inputs

    validate_inputs(args.ctc, args.age, args.sex, args.site)  # refuse bad values before reading images
    ct = read_ct(args.ct)
    mask = read_mask(args.mask, reference=ct)
    # a case folder segment wrote holds the chest anatomy: reused for the lesion site if it fits this CT
    out_dir = Path(args.out)
    anatomy = ChestAnatomy.from_case_folder(out_dir) if not args.site and out_dir.is_dir() else None
    result = predict_fusion(ct, mask, args.ctc, args.age, args.sex, args.site, model=args.model,
                            ct_only_model=args.ct_only_model, with_ct_only=not args.no_ct_only,
                            device=pick_device(args.device), anatomy=anatomy)
    result["source"] = {"ct": str(args.ct), "mask": str(args.mask)}
    result["provenance"] = provenance(model=result["fusion"]["model_name"],
                                      model_sha256=result["fusion"]["model_sha256"],
                                      source=source_provenance(ct, args.ct), mask=source_provenance(path=args.mask),
                                      params={"ctc": args.ctc, "age": args.age, "sex": args.sex, "site": args.site})
    from ..case_files import result_path

    out = result_path(args.out, "fusion")
    atomic_write_json(out, result)
    f, c = result["fusion"], result["ct_only"]
    top = ", ".join(f"{t['class']} {t['probability']:.1%}" for t in f["top3"])
    print(f"fusion (CT + CTC): P(malignant) = {f['p_malignant']:.3f} → {f['call']}; top-3: {top}")
    if c is not None:
        top = ", ".join(f"{t['class']} {t['probability']:.1%}" for t in c["top3"])
        print(f"CT only:           P(malignant) = {c['p_malignant']:.3f} → {c['call']}; top-3: {top}")
    for w in result["warnings"]:
        print(f"warning: {w}")
    print(f"wrote {out}")
    return 0
