"""Exit codes of the sync (sync_dags.sh passes them on) and the error that carries one."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # S3 or disk failure: the last good tree is kept
EXIT_CONFIG = 2
EXIT_REFUSED = 3  # some keys refused, the rest published
EXIT_DEPLOY_IN_PROGRESS = 75  # or another sync running: the next run catches up


class SyncError(Exception):
    """A failure with a message safe to print and the exit code to use."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class DeployInProgress(SyncError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_DEPLOY_IN_PROGRESS)
