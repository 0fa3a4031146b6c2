"""Small torch helpers shared by the deep-learning models (CNN risk, fusion).

Why here: device choice, seeding and the safetensors load-with-checks are the same for every
torch model; keeping them in one place means every model refuses a wrong weights file the
same way (a :class:`~mediastinal_ai.errors.ModelError` naming the file and the tensor), never
a raw torch traceback. torch is imported inside the functions so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ModelError
from .fileio import atomic_path

log = logging.getLogger(__name__)


def pick_device(requested: str | None = None) -> str:
    """``"cuda"`` when available (or asked for), else ``"cpu"``; an unavailable request is an error."""
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {requested!r} asked for, but no CUDA GPU is available (use --device cpu)")
    if not (requested == "cpu" or requested.startswith("cuda")):
        raise InputError(f"unknown device {requested!r}; use cpu, cuda or auto")
    return requested


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so a training run can be repeated."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def save_safetensors(state_dict: dict[str, Any], path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write a state dict as safetensors (atomically); ``metadata`` values are JSON-encoded strings."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_safetensors(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, metadata) of a safetensors file; any damage → :class:`ModelError` naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError("weights file not found", path)
    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as e:  # safetensors raises several error types for damaged headers/data
        raise ModelError(f"cannot read safetensors weights ({e})", path) from e
    out_meta = {}
    for k, v in meta.items():
        try:
            out_meta[k] = json.loads(v)
        except (TypeError, json.JSONDecodeError):
            out_meta[k] = v
    return tensors, out_meta


def load_into(module: Any, tensors: dict[str, Any], source: str | Path | None = None) -> None:
    """Load ``tensors`` into ``module``, refusing missing/unexpected keys or wrong shapes by name."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise ModelError(
            f"weights do not fit the architecture: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})", source)
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ModelError(f"tensor {k!r} has shape {tuple(v.shape)}, the architecture needs {tuple(own[k].shape)}",
                             source)
    module.load_state_dict(tensors, strict=True)


def load_torch_state_dict(path: str | Path) -> dict[str, Any]:
    """A local ``.pth``/``.pt`` torchvision state dict (``weights_only=True``) or a safetensors file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError("pretrained weights file not found", path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"cannot read the weights as a torch state dict with weights_only=True ({e})", path) from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelError("file does not hold a state dict", path)
    return sd
