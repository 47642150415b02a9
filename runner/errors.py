"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """Bad input: printed as one clear paragraph, never with a traceback.

    The message must say what was wrong and what is allowed.
    """

    exit_code = 2
