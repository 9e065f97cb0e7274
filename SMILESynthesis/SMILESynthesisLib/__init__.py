"""Logic of the SMILESynthesis module (MRML level, no qt)."""
from .job import SynthesisJob
from .logic import (DEFAULT_MODEL, NEW, OUTPUT_ROLES, OutputIsInput, Outputs, SynthesisLogic, bundled_model_path,
                    bundled_sample_paths, check_outputs, model_choice, model_file, no_flair_segmentor,
                    plan_outputs, wanted_outputs)

__all__ = ["DEFAULT_MODEL", "NEW", "OUTPUT_ROLES", "OutputIsInput", "Outputs", "SynthesisJob", "SynthesisLogic",
           "bundled_model_path", "bundled_sample_paths", "check_outputs", "model_choice", "model_file",
           "no_flair_segmentor", "plan_outputs", "wanted_outputs"]
