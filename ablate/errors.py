"""Errors that the CLI turns into exit code 2 with their message, and :class:`Terminated`
(SIGTERM), which it turns into exit code 143."""


class ConfigError(ValueError):
    """A usage or configuration error: the message names the problem and the fix."""


class DataUnavailable(ConfigError):
    """A dataset is not on this machine and could not be provisioned."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by the CLI where Ctrl-C raises KeyboardInterrupt: the same clean stop
    (cleanup runs, a message instead of a silent death), exit code 143 instead of 130."""
