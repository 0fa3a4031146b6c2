"""Classical chest anatomy (no learned weights): body, lungs, airway, bone, mediastinal compartments."""

from .chest import (
    ANTERIOR,
    LABEL_NAMES,
    MIDDLE,
    POSTERIOR,
    ChestAnatomy,
    analyse_chest,
    lesion_compartment,
)

__all__ = ["ANTERIOR", "LABEL_NAMES", "MIDDLE", "POSTERIOR", "ChestAnatomy", "analyse_chest", "lesion_compartment"]
