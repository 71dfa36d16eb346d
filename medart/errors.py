"""medart's own error types.

Every mistake a user can make (a wrong name, a missing file, a bad number) raises a
:class:`MedartError` whose message is one line naming the problem and the fix. The CLI prints
that line without a traceback; anything else is a bug and keeps its traceback.
"""


class MedartError(Exception):
    """Base class of the errors medart reports to users as one line."""


class ConfigError(MedartError, ValueError):
    """A parameter is unknown, out of range or malformed."""


class DataError(MedartError):
    """A dataset file is missing, corrupt, or does not match its declared layout."""


class ModelError(MedartError):
    """A model, its weights or its URI cannot be loaded."""
