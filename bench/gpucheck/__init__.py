"""bench/gpu_check.py's pieces: the plans and the time estimate, the preflight, the attention-kernel report,
and the measured sections. The plan and preflight modules import nothing heavy, so a missing package is
reported before torch or transformers are imported."""
