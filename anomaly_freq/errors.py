"""The one exception type for mistakes a user can make and fix."""


class AfreqError(Exception):
    """A user-facing error: the message names the thing that is wrong and how to fix it.

    The CLI prints it on one line without a traceback and exits non-zero.
    """


def worker_error(err: AfreqError) -> AfreqError:
    """``err`` itself, or for one that torch re-raised from a DataLoader worker (its message is
    then "Caught AfreqError in DataLoader worker process N" and the worker's traceback), the
    worker's own error with its one-line message."""
    prefix = f"{AfreqError.__module__}.{AfreqError.__qualname__}: "
    message = str(err)
    if not message.startswith(f"Caught {AfreqError.__name__} in DataLoader worker"):
        return err
    last = [line for line in message.splitlines() if line.startswith(prefix)]
    return AfreqError(last[-1][len(prefix):]) if last else err
