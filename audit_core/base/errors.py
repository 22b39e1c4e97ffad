"""Exceptions with a meaning for the CLI's exit codes.

``AuditError`` (and subclasses) is bad input: the CLI prints its message as one paragraph and
exits with 2, without a traceback. ``PluginFailure`` is a plugin's bug (exit 1, one paragraph
naming the plugin; the traceback goes to a log file). Anything else is an internal failure (exit 1,
with the traceback).
"""


class AuditError(Exception):
    """Bad input from the user: config, data, plugin choice or parameters (exit code 2)."""


class ConfigError(AuditError):
    """The configuration is invalid. The message names the key and, when known, the line."""


class DataError(AuditError):
    """An image, folder or manifest cannot be used."""


class PluginError(AuditError):
    """A plugin is unknown, broken, or cannot serve the requested combination."""


class AccessError(PluginError):
    """An attack needs an access level (e.g. noise prediction) that the target does not offer."""


class ModelError(AuditError):
    """A model folder or checkpoint cannot be loaded (wrong layout, pickled weights, ...)."""


class ResumeError(AuditError):
    """A run directory cannot be resumed into with the given config."""


class Interrupted(Exception):
    """Raised after Ctrl-C once the current batch has been committed."""


class PluginFailure(Exception):
    """A plugin misbehaved while running: it raised, or returned something of the wrong type,
    length, shape or with non-finite values (exit code 1, one paragraph naming the plugin, its
    distribution and version; the traceback goes to the run's log file). Not an ``AuditError``:
    the user's input was fine, the plugin's code was not."""

    def __init__(self, message: str, log: str | None = None):
        super().__init__(message)
        self.log = log  # where the traceback was written, when one was
