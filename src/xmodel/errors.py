"""Errors that the CLI turns into one line on stderr and a non-zero exit code."""


class XmodelError(Exception):
    """A user-facing error: its message is printed as is, without a traceback."""


class ConfigError(XmodelError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or inconsistent.

    The message always names the field (``model.hidden_size: …``).
    """
