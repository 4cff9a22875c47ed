"""One-line, user-facing errors.

Every problem a user can cause (bad data, bad settings, bad files) raises a subclass of
:class:`AdmmSnnError` whose message is a single line naming the file, field or value and what would
fix it. The command line prints that line and exits with status 2; it never shows a traceback for them.
"""


class AdmmSnnError(Exception):
    """Base class of every error admm-snn reports to users as one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class DataError(AdmmSnnError):
    """An input file or folder is missing, malformed or not what it claims to be."""


class SettingsError(AdmmSnnError):
    """A setting has a value outside its valid range."""


class CheckpointError(AdmmSnnError):
    """A model or checkpoint file is missing, corrupt, or does not match the run."""


class DivergenceError(AdmmSnnError):
    """Training produced NaN or infinite values."""


class ResourceError(AdmmSnnError):
    """A run would not fit in memory or on disk."""
