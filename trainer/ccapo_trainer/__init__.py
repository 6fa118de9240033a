"""The bundled GRPO/DAPO trainer (work in progress: loss, advantages and rewards so far)."""
