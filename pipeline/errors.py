"""The one exception type for problems the user can fix (bad input, missing model, bad option)."""


class InputError(ValueError):
    """Raised with a one-line message that names the offending input and says what to do.

    The command-line front end prints the message alone (no traceback) and exits non-zero.
    """


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of `e`'s message, stripped ("" when it has none), cut to `limit` characters
    ("..." marks a cut): what a results row, a log line or a one-line error quotes of an exception."""
    text = (str(e).strip().splitlines() or [""])[0].strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Failure(RuntimeError):
    """A failure of the machine or the cluster, not of the input (Ray cannot start, the cluster cannot
    be reached): one line that says what failed and where to look; the command line exits 1."""
