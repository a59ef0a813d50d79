"""The one error type users see: it names where the bad input is."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input from a user: a file, a line, a field or an option.

    The CLI prints ``str(error)`` on one line and exits with code 2; nothing else is shown.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
        if self.field is not None:
            where += (": " if where else "") + f"field '{self.field}'"
        return f"{where}: {self.message}" if where else self.message
