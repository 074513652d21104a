"""One exception root and one exit-code map for every command.

Agent outcomes (timed out, OOM, blocked...) are journal data, never exceptions; these are the
infrastructure and input faults that stop a command. The CLI maps them to exit codes in one place.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes, the same for every command (documented in docs/cli.md)."""

    OK = 0
    FAILURE = 1  # an unexpected internal error
    USAGE = 2  # bad arguments or malformed input
    DOCKER_UNAVAILABLE = 3
    IMAGE_MISSING = 4
    NOT_A_REPOSITORY = 5
    SESSION_EXISTS = 6
    SESSION_NOT_FOUND = 7
    JOURNAL_ERROR = 8  # a journal file is corrupt, unreadable or cannot be written
    WORKSPACE_ERROR = 9  # the isolated copy could not be made, checkpointed or harvested
    SESSION_BUSY = 10  # another supervisor drives this session
    INVALID_STATE = 11  # the session is in a state where the command makes no sense
    RUNTIME_UNAVAILABLE = 12  # --runtime names a runtime the engine does not have
    UNSAFE_TO_PROCEED = 13  # merge refused: uncommitted changes, or flagged paths not accepted
    MERGE_WOULD_OVERWRITE = 14  # merge refused even with --accept-flagged: untracked/ignored files, the journal
    # What `status`, `run` and `resume` return for the state of a session.
    RUN_RUNNING = 20
    RUN_NEEDS_ATTENTION = 21  # blocked, stopped, limit reached, interrupted: a human should look
    RUN_FAILED = 22
    INTERRUPTED = 130  # Ctrl-C


class HarnessError(Exception):
    """Root of every fault a command reports; carries its exit code and a one-line message."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(HarnessError):
    exit_code = ExitCode.USAGE


class DockerUnavailableError(HarnessError):
    exit_code = ExitCode.DOCKER_UNAVAILABLE


class ImageMissingError(HarnessError):
    exit_code = ExitCode.IMAGE_MISSING


class NotARepositoryError(HarnessError):
    exit_code = ExitCode.NOT_A_REPOSITORY


class SessionExistsError(HarnessError):
    exit_code = ExitCode.SESSION_EXISTS


class SessionNotFoundError(HarnessError):
    exit_code = ExitCode.SESSION_NOT_FOUND


class JournalError(HarnessError):
    exit_code = ExitCode.JOURNAL_ERROR


class WorkspaceError(HarnessError):
    exit_code = ExitCode.WORKSPACE_ERROR


class SessionBusyError(HarnessError):
    exit_code = ExitCode.SESSION_BUSY


class InvalidStateError(HarnessError):
    exit_code = ExitCode.INVALID_STATE


class RuntimeUnavailableError(HarnessError):
    exit_code = ExitCode.RUNTIME_UNAVAILABLE


class UnsafeToProceedError(HarnessError):
    exit_code = ExitCode.UNSAFE_TO_PROCEED


class MergeWouldOverwriteError(HarnessError):
    """The branch would replace files git does not track in the user's tree, or write the journal."""

    exit_code = ExitCode.MERGE_WOULD_OVERWRITE


class BackendError(HarnessError):
    """The container engine failed in a way that is not simply 'unreachable'."""

    exit_code = ExitCode.DOCKER_UNAVAILABLE


class TransientBackendError(BackendError):
    """An engine error worth retrying: connection reset, daemon restarting, 5xx."""
