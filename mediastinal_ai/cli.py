"""``mediastinal-ai`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Only the chosen subcommand's module is imported, and those modules
import torch/pyradiomics inside ``run``, so ``--help`` is instant.

Errors the user can fix (:class:`~mediastinal_ai.errors.MediastinalAIError`) print one clear
line and exit 2; anything else prints "unexpected error" and exits 1 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mediastinal_ai.demo", "make a synthetic case, segment it, save a Slicer scene (the README demo)"),
    "info": ("mediastinal_ai.io.cli", "read a CT (DICOM folder, NIfTI, NRRD, MHA) and print its geometry and HU range"),
    "synth": ("mediastinal_ai.synthetic.cli", "generate a synthetic chest-CT cohort (labelled synthetic)"),
    "models": ("mediastinal_ai.models.cli", "list, verify or install models"),
    "segment": ("mediastinal_ai.segmentation.cli_segment", "segment anterior mediastinal tumors in one CT"),
    "train-seg": ("mediastinal_ai.segmentation.cli_train", "train the 3D U-Net on a cohort manifest"),
    "evaluate-seg": ("mediastinal_ai.segmentation.cli_evaluate", "voxel and lesion-wise (FROC) evaluation"),
    "extract-radiomics": ("mediastinal_ai.radiomics.cli_extract", "extract pyradiomics features for a cohort"),
    "train-radiomics": ("mediastinal_ai.radiomics.cli_train", "train the radiomics WHO-risk model (SVM + comparators)"),
    "predict-radiomics": ("mediastinal_ai.radiomics.cli_predict", "predict WHO risk from radiomics for one case"),
    "train-cnn": ("mediastinal_ai.cnn.cli_train", "train the 2D CNN WHO-risk model"),
    "predict-cnn": ("mediastinal_ai.cnn.cli_predict", "predict WHO risk with the CNN and write a Grad-CAM map"),
    "train-fusion": ("mediastinal_ai.fusion.cli_train", "train the CT + CTC fusion model (DMFN) and its CT-only baseline"),
    "predict-fusion": ("mediastinal_ai.fusion.cli_predict", "benign/malignant and lesion class from CT + CTC"),
    "predictions": ("mediastinal_ai.evaluation.cli_join",
                    "join batch/case predictions with the manifest's labels into the table 'evaluate' takes"),
    "evaluate": ("mediastinal_ai.evaluation.cli", "ROC/AUC with DeLong CIs and tests, threshold metrics"),
    "seg-stats": ("mediastinal_ai.evaluation.cli_segstats", "segmentation statistics: 95% CIs, subgroups, failure analysis"),
    "table1": ("mediastinal_ai.evaluation.cli_table1", "baseline characteristics table of a cohort (Table 1)"),
    "report": ("mediastinal_ai.evaluation.cli_report", "per-case or cohort report (HTML and PDF)"),
    "export-dicom": ("mediastinal_ai.pacs.cli", "DICOM SEG (binary + fractional) and TID 1500 SR of a case, for PACS"),
    "run": ("mediastinal_ai.batch.cli", "run steps over a whole cohort (resumable, Dask)"),
}


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` shows every option's default (``(default: …)``) unless its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower() or not action.option_strings:
            return text
        if action.default is None or action.default is argparse.SUPPRESS or isinstance(action.default, bool):
            return text
        return f"{text} (default: %(default)s)".strip()


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Options without a help text still get a line, so their default is shown."""
    for a in parser._actions:
        if a.help is None and a.option_strings and a.default is not None and a.default is not argparse.SUPPRESS \
                and not isinstance(a.default, bool):
            a.help = "default: %(default)s"


def _top_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="mediastinal-ai",
        description="MediastinalAI: anterior mediastinal tumor segmentation, WHO-risk and CT+CTC fusion "
        "models for chest CT. Demo models are not for clinical use.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<18} {h}" for n, (_, h) in COMMANDS.items())
        + "\n\nRun 'mediastinal-ai COMMAND --help' for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    p.add_argument("command", nargs="?", choices=list(COMMANDS), metavar="COMMAND")
    return p


def main(argv: list[str] | None = None) -> int:
    """The ``mediastinal-ai`` entry point. SIGTERM (SLURM, Kubernetes, systemd stop jobs with it)
    is handled like Ctrl-C from the start, in every command: the command stops cleanly, says
    "interrupted" and exits 130 instead of dying mid-write."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _main(argv)

    def interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, old)


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    # Split global options from the command and its own arguments.
    idx = next((i for i, a in enumerate(argv) if a in COMMANDS), None)
    glob, rest = (argv, []) if idx is None else (argv[: idx + 1], argv[idx + 1 :])
    gargs = top.parse_args(glob)
    if gargs.command is None:
        top.print_help()
        return 0 if not argv or "-h" in argv or "--help" in argv else 2

    logging.basicConfig(
        level=logging.DEBUG if gargs.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    module_name, help_text = COMMANDS[gargs.command]
    from .errors import MediastinalAIError

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("mediastinal_ai"):
            print(f"mediastinal-ai: command {gargs.command!r} is not available in this build", file=sys.stderr)
            return 2
        print(f"mediastinal-ai: missing dependency {e.name!r}; install with: pip install 'mediastinal-ai[all]'",
              file=sys.stderr)
        return 2
    sub = argparse.ArgumentParser(prog=f"mediastinal-ai {gargs.command}", description=help_text,
                                  formatter_class=DefaultsHelpFormatter)
    module.add_arguments(sub)
    show_defaults(sub)
    args = sub.parse_args(rest)
    new_out = _new_out_dir(args)
    try:
        _check_before_work(gargs.command, args)
        return int(module.run(args) or 0)
    except MediastinalAIError as e:
        _drop_if_empty(new_out)
        print(f"mediastinal-ai {gargs.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _drop_if_empty(new_out)
        print(f"mediastinal-ai {gargs.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence
        _drop_if_empty(new_out)
        if gargs.debug:
            raise
        print(f"mediastinal-ai {gargs.command}: unexpected error: {type(e).__name__}: {e} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


# Commands whose --threshold is a probability: checked before minutes of inference, not after.
PROBABILITY_THRESHOLD = ("segment", "run")


def _check_before_work(command: str, args: argparse.Namespace) -> None:
    from .errors import InputError

    t = getattr(args, "threshold", None)
    if command in PROBABILITY_THRESHOLD and t is not None and not 0.0 < float(t) < 1.0:
        raise InputError(f"--threshold must be a probability between 0 and 1 (exclusive), got {t:g}")
    out = getattr(args, "out", None)
    if isinstance(out, str):
        try:
            out.encode("utf-8")
        except UnicodeEncodeError:  # SimpleITK would abort the process when it writes there
            raise InputError("--out is not valid UTF-8; choose another folder name", ascii(out)) from None


def _new_out_dir(args: argparse.Namespace):
    """The command's ``--out`` folder when it does not exist yet (so a failure may remove it)."""
    from pathlib import Path

    out = getattr(args, "out", None)
    if not isinstance(out, str) or not out:
        return None
    p = Path(out)
    return None if p.exists() or p.is_symlink() else p


def _drop_if_empty(p) -> None:
    """Remove a ``--out`` this command created when the failed command left no file in it.

    Why: a failed command left an empty ``--out`` behind, which looked like a finished run
    with no results. A folder holding any file (a partial batch, a log) is kept.
    """
    import os

    if p is None or not p.is_dir() or p.is_symlink():
        return
    for _root, _dirs, files in os.walk(p):
        if files:
            return
    for root, _dirs, _files in os.walk(p, topdown=False):
        try:
            os.rmdir(root)
        except OSError:
            return


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
