"""redtrain: train, export and evaluate Random Ensemble Defense model packages."""

import os

# onnxruntime sends telemetry unless told not to; set before any module here imports it.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

__version__ = "0.1.0"
