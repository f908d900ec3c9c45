"""Errors that mean "the input is wrong", as opposed to a bug in tmlrepair.

Every one carries a one-line message that says what is wrong and what to do. The CLI
prints it and exits with code 2 (1 is reserved for "check found a regression").
"""


class TmlrepairError(Exception):
    """Base class: bad input from the user, reported in one line, exit code 2."""

    exit_code = 2


class ModelError(TmlrepairError):
    """A model file is missing, corrupt, or not what its role requires."""


class PairError(TmlrepairError):
    """The float and int8 models do not form a pair of the same network."""


class DataError(TmlrepairError):
    """A calibration or holdout set is missing, malformed, or does not fit the model."""


class OutputExistsError(TmlrepairError):
    """An output path exists and overwriting was not asked for."""


class DeviceError(TmlrepairError):
    """The device cannot be reached, does not answer, or answers with an error."""

    def __init__(self, message: str, code: int | None = None, detail: int = 0):
        super().__init__(message)
        self.code = code
        self.detail = detail


class Interrupted(TmlrepairError):
    """Ctrl-C during a long run: the message says what was kept (journaled samples) and how to go on."""

    exit_code = 130
