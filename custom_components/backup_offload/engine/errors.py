"""Typed errors of the synchronous core.

Each error carries a ``reason`` and ``placeholders``; its ``translation_key``
names the translated message (``exceptions.<key>`` in strings.json) that the
integration's boundary (``boundary.py``) raises to the user, and
``caller_input`` says whether it is the caller's mistake or a failure. The
core never imports Home Assistant.
"""

from __future__ import annotations

from typing import Any, ClassVar


def printable(text: str) -> str:
    """Return ``text`` with every lone surrogate replaced by U+FFFD.

    File names that are not valid UTF-8 (Python keeps their bytes as lone
    surrogates) and JSON strings with a lone surrogate escape cannot be encoded:
    one of them in a message or a listing would break every JSON response
    and Home Assistant's backup page. What a user sees goes through here.
    """
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return "".join(
            "\ufffd" if "\ud800" <= char <= "\udfff" else char for char in text
        )
    return text


def _rebuild(
    cls: type[BackupOffloadError], args: tuple[Any, ...], state: dict[str, Any]
) -> BackupOffloadError:
    """Recreate an error from ``__reduce__``'s parts, without its ``__init__``."""
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class BackupOffloadError(Exception):
    """Base class of every error the core raises on purpose."""

    reason = "unknown"
    caller_input: ClassVar[bool] = False
    """True when the caller asked for something that cannot be (a backup that
    is not there, a wrong password): not a failure of the location."""
    logged = False
    """True once a warning has said it (the operation that failed)."""

    def __init__(self, message: str, **placeholders: str) -> None:
        """Store a readable message and the translation placeholders."""
        message = printable(message)
        super().__init__(message)
        self.placeholders: dict[str, str] = {
            key: printable(value)
            for key, value in {"error": message, **placeholders}.items()
        }

    @property
    def translation_key(self) -> str:
        """Return the key of the error's message (``exceptions`` in strings.json)."""
        return self.reason

    @property
    def reason_code(self) -> str:
        """Return the short code of the problem, as attributes and repairs show it."""
        return self.reason

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with every attribute (errors cross from the worker process)."""
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class LocationUnavailableError(BackupOffloadError):
    """The location cannot be used right now (not mounted, gone, hung, ...).

    ``location_reason`` says why: ``not_found``, ``not_a_directory``,
    ``not_a_mount``, ``not_writable``, ``unreachable``, ``not_responding``,
    ``path_too_long``, ``inside_config``, ``system_folder``.
    """

    reason = "location_unavailable"

    def __init__(self, message: str, location_reason: str, **placeholders: str) -> None:
        """Remember why the location is unusable.

        ``detail`` is the message without the path in front: the translated
        messages name the location and its path themselves, once.
        """
        path = placeholders.get("path")
        detail = message
        if path and message.startswith(f"{path}: "):
            detail = message[len(path) + 2 :]
        super().__init__(message, detail=detail, **placeholders)
        self.location_reason = location_reason

    @property
    def translation_key(self) -> str:
        """Return the message of this reason (``location_not_found``, ...)."""
        return f"location_{self.location_reason}"

    @property
    def reason_code(self) -> str:
        """Return why the location is unusable (``not_found``, ...)."""
        return self.location_reason


class LocationBusyError(BackupOffloadError):
    """Another operation holds the location (or, while a restore runs, every one).

    Raised by the integration's lock, not by the core; ``location`` is the
    location that is busy, ``state`` what it does.
    """

    reason = "busy"

    def __init__(self, location: str, state: str) -> None:
        """Name the busy location and what it does."""
        super().__init__(
            f"Location {location} is busy ({state}). Try again when the current"
            " operation has finished",
            location=location,
            state=state,
        )
        # Its message is complete without the text of an error.
        del self.placeholders["error"]


class InsufficientSpaceError(BackupOffloadError):
    """Not enough free space for the write (checked before, or ENOSPC)."""

    reason = "insufficient_space"


class WriteFailedError(BackupOffloadError):
    """Writing a backup failed with an I/O error; nothing was left behind."""

    reason = "write_failed"


class BackupNotFoundError(BackupOffloadError):
    """No backup with that id or file name in the location."""

    reason = "backup_not_found"
    caller_input = True


class InvalidBackupError(BackupOffloadError):
    """The file is not a Home Assistant backup (no/invalid backup.json, not a tar)."""

    reason = "invalid_backup"


class CorruptBackupError(BackupOffloadError):
    """The archive is damaged: truncated, bit flips, checksum mismatch."""

    reason = "corrupt_backup"


class WrongPasswordError(BackupOffloadError):
    """The password is missing or does not decrypt the backup."""

    reason = "wrong_password"
    caller_input = True


class UnsupportedFormatError(BackupOffloadError):
    """The backup needs a newer securetar (or format) than installed."""

    reason = "unsupported_format"


class UnsafeArchiveError(BackupOffloadError):
    """A member would escape the target directory or is a device node."""

    reason = "unsafe_archive"


class IncompleteBackupError(BackupOffloadError):
    """The backup would not hold what Home Assistant needs to start."""

    reason = "backup_incomplete"


class WorkerFailedError(BackupOffloadError):
    """The worker process of an operation died before it answered."""

    reason = "worker_failed"


class CopyMismatchError(CorruptBackupError):
    """A copy read back from the location is not the bytes the source sent."""

    reason = "copy_mismatch"


class CopySourceError(BackupOffloadError):
    """The source of a copy failed: its agent raised, or it stopped sending.

    ``source`` names the source backup location, ``backup_id`` the backup.
    """

    reason = "copy_source_failed"


class UnknownSourceError(BackupOffloadError):
    """No backup location of Home Assistant has this agent id."""

    reason = "copy_unknown_source"
    caller_input = True


class SameLocationError(BackupOffloadError):
    """A copy from a location into itself."""

    reason = "copy_same_location"
    caller_input = True


class NotInSourceError(BackupNotFoundError):
    """The source of a copy has no backup with that id."""

    reason = "copy_not_in_source"
