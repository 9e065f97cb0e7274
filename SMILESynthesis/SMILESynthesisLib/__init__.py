"""Logic of the SMILESynthesis module (MRML level, no qt)."""
from .logic import (NEW, OUTPUT_ROLES, Outputs, SynthesisLogic, bundled_model_path, bundled_sample_paths,
                    plan_outputs)

__all__ = ["NEW", "OUTPUT_ROLES", "Outputs", "SynthesisLogic", "bundled_model_path", "bundled_sample_paths",
           "plan_outputs"]
