"""Shared pytest fixtures. Task-specific fixtures live in the task's own test modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_CT_DIR = Path(os.environ.get("MEDIASTINAL_AI_REAL_CT", REPO.parent / "shared" / "data" / "real-ct"))

# Two cores on CI: keep torch from oversubscribing when several things run.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def real_ct_dir() -> Path:
    if not (REAL_CT_DIR / "mediastinum_crop_ct.nii.gz").is_file():
        pytest.skip(f"real CT samples not found at {REAL_CT_DIR} (see ../shared/data/real-ct/README.md)")
    return REAL_CT_DIR


@pytest.fixture(autouse=True)
def _isolated_user_models(tmp_path_factory, monkeypatch):
    """Never read or write the real ~/.mediastinal_ai during tests."""
    monkeypatch.setenv("MEDIASTINAL_AI_MODELS", str(tmp_path_factory.mktemp("user_models")))
