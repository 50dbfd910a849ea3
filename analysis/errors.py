"""The one exception type for a user's mistake (bad input), with a clear message.

The CLI prints such an error as one message and exits non-zero, without a
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A problem with a user's input file, described for a person to fix.

    Parameters
    ----------
    file : str or Path
        The file at fault.
    problem : str
        What is wrong.
    row, column : optional
        Where it is wrong (row as numbered in the file, 1 = first line).
    expected, found : optional
        What was expected and what was found.
    hint : optional
        What to do about it.
    details : list of str, optional
        One line per failure when several are reported together (each names
        its rows and column).

    Examples
    --------
    >>> str(InputError("a.csv", "missing column", column="T1", hint="re-export"))
    'a.csv: missing column (column T1). What to do: re-export'
    """

    def __init__(self, file, problem, *, row=None, column=None, expected=None, found=None,
                 hint=None, details=None):
        self.file = str(file) if not isinstance(file, Path) else str(file)
        self.problem = problem
        self.row = row
        self.column = column
        self.expected = expected
        self.found = found
        self.hint = hint
        self.details = list(details or [])
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column}")
        msg = f"{self.file}: {self.problem}"
        if where:
            msg += f" ({', '.join(where)})"
        msg += "."
        if self.expected is not None:
            msg += f" Expected: {self.expected}."
        if self.found is not None:
            msg += f" Found: {self.found}."
        msg = msg.replace("..", ".")
        for line in self.details:
            msg += f"\n  - {line}"
        if self.hint:
            msg += ("\n" if self.details else " ") + f"What to do: {self.hint}"
        return msg
