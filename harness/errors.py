"""The harness's exceptions: one root, each message one line naming the cause and the fix."""


class PgolfError(Exception):
    """Root of every error pgolf reports to a user."""


class ConfigError(PgolfError, ValueError):
    """A search config or track profile is malformed."""


class StoreError(PgolfError):
    """The run store cannot be opened or written."""


class BaselineError(PgolfError):
    """The baseline file is not a contract-following trainer."""
