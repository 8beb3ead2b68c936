"""One exception family: the CLI prints any of them as one line and exits non-zero."""


class S2IError(Exception):
    """Base for every error a user should see as one clear line (no traceback)."""

    exit_code = 1


class MissingDependency(S2IError):
    """An optional package a requested feature needs is not installed (the message says which
    extra to install)."""

    exit_code = 2


class DataError(S2IError):
    """Unreadable or malformed data set, image or info file."""


class ImageTooLarge(DataError):
    """An image over the byte or pixel cap of the image reader (refused before decoding)."""


class UnknownClassError(S2IError, LookupError):
    """A class name or id that the model or data set does not have."""


class CheckpointError(S2IError):
    """Missing, truncated or foreign checkpoint, or one that cannot be written."""


class OutputError(S2IError):
    """A file or folder the project was asked to write could not be written."""


class EngineError(S2IError):
    """Bad input to an Engine, a corrupt artefact or a backend that cannot run."""


class BackendUnavailable(EngineError):
    """A requested backend's package or device is missing (message names what to install)."""

    exit_code = 2


class ClassifierError(S2IError):
    """Missing, truncated or foreign classifier file."""
