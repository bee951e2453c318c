"""Errors meant for the person at the keyboard: the CLI prints them without a traceback and exits with code 2."""


class UserError(Exception):
    """Bad input or set-up. The message names the file or setting and says what to do."""
