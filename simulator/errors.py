"""The one exception type for bad user input.

Anything a user gave that cannot be used (a file, a field, a trace line, a knob) raises
`InputError` with a message that names the place and the fix. The CLI prints it as one line
and exits with code 2; everything else is an internal error (exit 1).
"""


class InputError(Exception):
    """Bad input from the user; the message is shown as is, prefixed by 'error: '."""


class InvalidFile(InputError):
    """A file the user named (a hardware spec, a model config, a calibration profile) that is
    missing, unreadable or invalid. A plan reports it as an error, not as a candidate that
    does not fit."""
