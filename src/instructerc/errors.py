"""The one error type users see: it names where the bad input is."""

from __future__ import annotations

import re
from pathlib import Path

# Characters that would break the one line an error is printed on (line feeds, carriage returns,
# Unicode's line and paragraph separators) or restyle the terminal showing it (escape sequences):
# they reach messages inside the user's ids, labels, dataset names and file names.
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return {0x0A: "\\n", 0x0D: "\\r"}.get(code) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


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
        return _UNPRINTABLE.sub(_escaped, f"{where}: {self.message}" if where else self.message)
