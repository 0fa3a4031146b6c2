"""Headless cohort runs: discover cases, run pipeline steps per case (in-process or on Dask),
resumable and isolated per case. See :mod:`mediastinal_ai.batch.engine`."""

from .discover import CaseSpec, discover
from .engine import RunConfig, process_case, run_cohort
from .steps import STEPS, order_steps

__all__ = ["STEPS", "CaseSpec", "RunConfig", "discover", "order_steps", "process_case", "run_cohort"]
