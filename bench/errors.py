"""Errors a user can fix. The CLI prints them as one line and exits non-zero."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none): library errors
    often carry pages of context that a one-line error must not print."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class BenchError(Exception):
    """Bad input or an impossible setting: shown to the user as a one-line message."""

    exit_code = 2


class TrainingDiverged(BenchError):
    """The training loss became NaN or infinite; what was measured so far is kept."""

    exit_code = 3

    def __init__(self, step: int, terms: dict):
        self.step = step
        self.terms = terms
        shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        super().__init__(f"training loss became non-finite at step {step} ({shown}); stopped")
