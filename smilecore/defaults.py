"""Numbers shared by the engine and smile train's settings, in a module that imports nothing
(train_config.py must not load torch, and gated.py and dataset.py must not import it back)."""

GATE_FLOOR = 0.02                   # gated G: gate values below it count as 0 (gated.gate)
DEFAULT_MIN_BRAIN_FRACTION = 0.01   # axial slices with a smaller share of brain are not trained on
