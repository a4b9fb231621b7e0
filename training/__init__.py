"""Everything that imports torch: architectures, data, tasks, the training loop, ONNX export."""

import os

# Spinning OpenMP threads slow torch badly when another process shares the cores
# (load_tests/FINDINGS.md); this must be set before torch loads, hence here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
