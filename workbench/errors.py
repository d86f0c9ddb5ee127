"""One exception type for everything a user can get wrong.

The CLI prints `WorkbenchError` as a single line (no traceback); anything else is a bug and keeps its traceback.
"""


class WorkbenchError(Exception):
    """A problem with the user's input or environment, explained in one line that says what to do."""
