"""Model registry: resolve a model name to verified files.

Search order: an explicit path (card ``.model.json`` or a folder holding one), the user
models folder (``$MEDIASTINAL_AI_MODELS`` or ``~/.mediastinal_ai/models``), then the demo
models shipped inside the package (``mediastinal_ai/models/builtin``). Nothing is ever
downloaded at run time: :func:`install` copies a local file (or a ``file://`` URL) into the
user folder after checking its sha256.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ModelError
from ..fileio import atomic_path, sha256_file
from .card import CARD_SUFFIX, ModelCard, ResolvedModel, check_plain_name, verify

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"

# The default model for each task, by name; the demo models live in BUILTIN_DIR.
DEFAULT_MODELS = {
    "segmentation": "demo-seg-unet3d",
    "risk-radiomics": "demo-risk-radiomics-svm",
    "risk-cnn": "demo-risk-cnn",
    "fusion": "demo-fusion-dmfn",
    "fusion-ct-only": "demo-fusion-ct-only",
}


def user_models_dir() -> Path:
    env = os.environ.get("MEDIASTINAL_AI_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".mediastinal_ai" / "models"


def search_dirs() -> list[Path]:
    return [user_models_dir(), BUILTIN_DIR]


def _cards_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(folder.rglob(f"*{CARD_SUFFIX}"))


def list_models(task: str | None = None) -> list[tuple[ModelCard, Path]]:
    """All model cards found (not verified; :func:`resolve` verifies)."""
    out = []
    seen: set[str] = set()
    for d in search_dirs():
        for p in _cards_in(d):
            try:
                card = ModelCard.load(p)
            except ModelError:
                continue
            if card.name in seen or (task and card.task != task):
                continue
            seen.add(card.name)
            out.append((card, p))
    return out


def resolve(name_or_path: str | Path | None, task: str | None = None) -> ResolvedModel:
    """Name, card path or folder → verified model. ``None`` gives the task's default model."""
    if name_or_path is None or str(name_or_path) == "":
        if task is None:
            raise ModelError("no model given and no task to pick a default for")
        name_or_path = DEFAULT_MODELS[task]
    p = Path(str(name_or_path)).expanduser()
    if p.exists():
        if p.is_dir():
            cards = _cards_in(p)
            if task:
                cards = [c for c in cards if _task_of(c) == task] or cards
            if len(cards) != 1:
                raise ModelError(f"expected exactly one *{CARD_SUFFIX} in the folder, found {len(cards)}", p)
            return verify(cards[0], expected_task=task)
        if p.name.endswith(CARD_SUFFIX):
            return verify(p, expected_task=task)
        sibling = p.parent / (p.name.split(".")[0] + CARD_SUFFIX)
        if sibling.is_file():
            return verify(sibling, expected_task=task)
        raise ModelError(f"no model card ({CARD_SUFFIX}) beside this weights file", p)
    for card, path in list_models():
        if card.name == str(name_or_path):
            return verify(path, expected_task=task)
    known = ", ".join(sorted(c.name for c, _ in list_models(task))) or "none"
    raise ModelError(f"model {str(name_or_path)!r} not found in {', '.join(map(str, search_dirs()))} (installed: {known})")


def _task_of(card_path: Path) -> str | None:
    try:
        return ModelCard.load(card_path).task
    except ModelError:
        return None


def install(source: str | Path, sha256: str | None = None, dest_dir: Path | None = None) -> ResolvedModel:
    """Copy a model (its card + weights) into the user models folder, checking sha256.

    ``source`` is a card file, a folder with one card, or a ``file://`` URL to a card. Remote
    URLs are refused: MediastinalAI never downloads at run time (fetch the file yourself,
    then install it from disk). ``sha256`` (of the weights) must match when given.
    """
    src = str(source)
    parsed = urlparse(src)
    if parsed.scheme in ("http", "https", "ftp", "s3"):
        raise ModelError("remote URLs are not fetched at run time; download the model, then install the local file", src)
    if parsed.scheme == "file":
        src = parsed.path
    resolved = resolve(src)
    if sha256 and resolved.card.sha256 != sha256.lower():
        raise ModelError(f"sha256 given ({sha256[:16]}…) does not match the model ({resolved.card.sha256[:16]}…)", src)
    root = (dest_dir or user_models_dir()).expanduser().resolve()
    check_plain_name(resolved.card.name, "name")
    dest = (root / resolved.card.name).resolve()
    if dest.parent != root:  # belt and braces: check_plain_name already refuses path parts
        raise ModelError(f"model name {resolved.card.name!r} would install outside the models folder", root)
    dest.mkdir(parents=True, exist_ok=True)
    for f in (resolved.weights_path, resolved.card_path):
        with atomic_path(dest / f.name) as tmp:
            shutil.copyfile(f, tmp)
    out = verify(dest / resolved.card_path.name)
    if sha256_file(out.weights_path) != resolved.card.sha256:  # pragma: no cover - verify() already checks
        raise ModelError("copy corrupted", out.weights_path)
    if resolved.card.task == "fusion":
        _install_twin(resolved, root)
    return out


def companion_of(resolved: ResolvedModel) -> Path | None:
    """The card of the CT-only baseline trained with a fusion model, found beside its card
    (``train-fusion`` writes ``OUT/<fusion>/`` and ``OUT/<ct-only>/``), or None."""
    info = resolved.card.extra.get("ct_only_model") or {}
    if not info.get("name"):
        return None
    here = resolved.card_path.parent
    candidates = []
    if info.get("card"):
        candidates.append(here / str(info["card"]))
    candidates += [here.parent / str(info["name"]) / f"{info['name']}{CARD_SUFFIX}", here / f"{info['name']}{CARD_SUFFIX}"]
    for c in candidates:
        try:
            if c.is_file() and ModelCard.load(c).name == info["name"]:
                return c
        except ModelError:
            continue
    return None


def _install_twin(fusion: ResolvedModel, root: Path) -> None:
    """Install (or update) the fusion model's CT-only twin with it.

    Why: installing only the fusion card left an older CT-only model of the same name in place
    (or none), so the side-by-side CT-only prediction came from another training run. The twin
    beside the source card is installed when its sha256 is the one the fusion card names; when
    it is not there, an installed twin of that name with another sha256 is removed (stale), so
    prediction says "CT-only baseline unavailable" instead of comparing against the wrong model.
    """
    import logging

    log = logging.getLogger(__name__)
    info = fusion.card.extra.get("ct_only_model") or {}
    name, sha = info.get("name"), info.get("sha256")
    if not name:
        return
    check_plain_name(name, "ct_only_model name")
    src = companion_of(fusion)
    if src is not None:
        twin = verify(src, expected_task="fusion-ct-only")
        if sha and twin.card.sha256 != sha:
            raise ModelError(f"the CT-only model beside this fusion model ({name}) is not the one it was trained with "
                             "(sha256 differs); nothing of the twin was installed", src)
        install(src, sha256=sha, dest_dir=root)
        log.info("installed the CT-only twin %s with the fusion model %s", name, fusion.card.name)
        return
    stale = root / name
    card = stale / f"{name}{CARD_SUFFIX}"
    if card.is_file():
        try:
            old = ModelCard.load(card)
        except ModelError:
            old = None
        if old is None or (sha and old.sha256 != sha):
            shutil.rmtree(stale, ignore_errors=True)
            log.warning("removed the installed CT-only model %s: it is not the twin of the fusion model %s "
                        "(sha256 differs) and the twin was not found beside the fusion card", name, fusion.card.name)
