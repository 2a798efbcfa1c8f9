"""What every layer shares about errors: the `vitgan` command's exit statuses, and errors said in one line."""

from __future__ import annotations

EXIT_LOST_RANK = 1  # under torchrun: a lost rank or a failed collective
EXIT_BAD_INPUT = 2  # a bad option, file or dataset: the one-line error names it
EXIT_DIVERGED = 3  # a run stopped by a NaN or inf (a result, not bad input)


def one_line(text: str) -> str:
    """`text` with every character that is not printable (control characters, line and paragraph separators, lone
    surrogates from undecodable arguments) written as its Python escape: whatever the user typed, an error is one
    line (`--resume $'\\r'` reads `\\r`)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (a library's multi-line report), or its type's name if it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
