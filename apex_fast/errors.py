"""The project's own error type: the CLI turns it into one line and exit code 2."""


class ApexError(Exception):
    """Bad input or an impossible request; the message is shown to the user as is."""
