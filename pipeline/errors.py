"""The one exception type for problems the user can fix (bad input, missing model, bad option)."""


class InputError(ValueError):
    """Raised with a one-line message that names the offending input and says what to do.

    The command-line front end prints the message alone (no traceback) and exits non-zero.
    """
