"""Synthetic chest-CT cohort (labelled SYNTHETIC everywhere): the demo and test data. See docs/synthetic.md."""

from .cohort import generate_cohort
from .generator import TISSUE_HU, TISSUES, SyntheticCase, appearance_params, generate_case, tissue_hu

__all__ = ["TISSUES", "TISSUE_HU", "SyntheticCase", "appearance_params", "generate_case", "generate_cohort",
           "tissue_hu"]
