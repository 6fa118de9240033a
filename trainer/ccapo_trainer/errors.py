"""The trainer's own error: a run that cannot start or go on for a reason the user must fix."""


class TrainingError(RuntimeError):
    """A run that cannot start or go on for a reason the user must fix."""
