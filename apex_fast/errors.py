"""The project's own error type: the CLI turns it into one line and exit code 2."""


class ApexError(Exception):
    """Bad input or an impossible request; the message is shown to the user as is."""


def check_at_least(what: str, value: float, low: int) -> None:
    """ApexError `<what> must be at least <low>, got <value>` (a whole number) when value < low."""
    if value < low:
        raise ApexError(f"{what} must be at least {low}, got {int(value)}")
