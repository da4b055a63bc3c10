"""The one exception type for mistakes a user can make and fix."""


class AfreqError(Exception):
    """A user-facing error: the message names the thing that is wrong and how to fix it.

    The CLI prints it on one line without a traceback and exits non-zero.
    """
