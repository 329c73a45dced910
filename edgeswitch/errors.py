"""Errors raised at the package boundary.

Every check on user input raises one of these with a message that names the problem, so a user
never has to read a traceback from deep inside numpy or onnxruntime.
"""


class EdgeSwitchError(ValueError):
    """Base class: bad input, bad file or an inconsistent configuration."""


class DataError(EdgeSwitchError):
    """Clips, labels or a data file are malformed (shape, dtype, NaN, unknown class...)."""


class ModelError(EdgeSwitchError):
    """Models that cannot work together or a model artifact that cannot be used."""


class NotFittedError(EdgeSwitchError):
    """A learnable object was used before `fit`."""
