"""The error every bad configuration raises (one line: what was wrong and what is accepted)."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message says what was wrong and what is accepted."""
