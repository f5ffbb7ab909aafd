"""User-facing errors: the CLI prints their message on one line and exits 2, no traceback."""


class UserError(Exception):
    """A problem the user can fix: bad config, missing data, a broken package."""
