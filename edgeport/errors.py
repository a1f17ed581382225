"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""


class EdgeportError(Exception):
    """A problem the user can fix (bad input, missing file, unsupported combination)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


class ParityError(EdgeportError):
    """An exported artifact disagrees with its reference beyond tolerance."""
