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
    ENGINE_UNAVAILABLE = 3
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

    @classmethod
    def describe(cls) -> dict[int, str]:
        """What each code means (docs/cli.md renders it; a unit test checks that none is missing)."""
        return {
            cls.OK: "Success; for `status`, `run` and `resume`: the session completed.",
            cls.FAILURE: "An unexpected internal error (HARNESS_DEBUG=1 shows the traceback).",
            cls.USAGE: "Bad arguments or malformed input.",
            cls.ENGINE_UNAVAILABLE: "The container engine (Docker or Kubernetes) cannot be reached, or failed.",
            cls.IMAGE_MISSING: "The container image does not exist and could not be built.",
            cls.NOT_A_REPOSITORY: "--repo is not a git repository (or has no working tree).",
            cls.SESSION_EXISTS: "A session with that id already exists.",
            cls.SESSION_NOT_FOUND: "No session with that id.",
            cls.JOURNAL_ERROR: "A journal file is corrupt, unreadable or cannot be written.",
            cls.WORKSPACE_ERROR: "The isolated copy could not be made, checkpointed or harvested.",
            cls.SESSION_BUSY: "Another supervisor drives this session.",
            cls.INVALID_STATE: "The session is in a state where the command makes no sense.",
            cls.RUNTIME_UNAVAILABLE: "--runtime names a runtime the engine does not have.",
            cls.UNSAFE_TO_PROCEED: "merge refused: uncommitted changes, or flagged paths not accepted.",
            cls.MERGE_WOULD_OVERWRITE: "merge refused even with --accept-flagged: it would replace files git does "
            "not track, or write the journal.",
            cls.RUN_RUNNING: "The session is still running, or waits in the machine-wide queue for a slot.",
            cls.RUN_NEEDS_ATTENTION: "Blocked, stopped, stuck, limit reached or interrupted: a human should look.",
            cls.RUN_FAILED: "The run failed (repeated agent failures).",
            cls.INTERRUPTED: "Ctrl-C.",
        }


class HarnessError(Exception):
    """Root of every fault a command reports; carries its exit code and a one-line message."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(HarnessError):
    exit_code = ExitCode.USAGE


class EngineUnavailableError(HarnessError):
    """The container engine (Docker, the Kubernetes cluster) does not answer."""

    exit_code = ExitCode.ENGINE_UNAVAILABLE


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

    exit_code = ExitCode.ENGINE_UNAVAILABLE


class TransientBackendError(BackendError):
    """An engine error worth retrying: connection reset, daemon restarting, 5xx."""
