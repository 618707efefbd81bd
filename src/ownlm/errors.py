"""The one exception type for mistakes a user can fix.

The CLI turns a ``UserError`` into a one-line message and exit code 2 — never a traceback.
Raise it at boundaries (files, flags, formats) with what was expected, what was found, and what to do.
"""


class UserError(Exception):
    """A problem with the user's input, files or flags; ``str(err)`` is the whole message."""

    exit_code = 2
