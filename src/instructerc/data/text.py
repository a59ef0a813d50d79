"""Repairing text damaged on its way into the COSMIC pickles."""

from __future__ import annotations

import re

_C1_CONTROLS = re.compile("[\x80-\x9f]")


def _cp1252(match: re.Match[str]) -> str:
    try:
        return bytes([ord(match.group())]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d are unassigned in cp1252
        return ""


def repair_cp1252_mojibake(text: str) -> str:
    """Undo cp1252 bytes that were decoded as latin1 (``\\x92`` back to ``’``).

    Only C1 control characters are touched: real text never contains them, so characters
    that were decoded right (``é``, ``’``) are left alone. A non-breaking space becomes a space,
    as in the official MELD CSVs.
    """
    return _C1_CONTROLS.sub(_cp1252, text).replace("\xa0", " ")
