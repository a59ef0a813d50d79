"""The record retrieval hands to prompts: one training utterance and its emotion.

It lives here rather than with the templates so retrieval needs nothing from prompts; the
templates import it (prompts sit above retrieval).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Demonstration:
    """A retrieved training utterance shown with its emotion."""

    text: str
    label: str
