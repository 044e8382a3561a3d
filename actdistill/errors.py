"""One exception type for problems a user can fix; the CLI prints it as a single line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ActdistillError(Exception):
    """A user-facing error: the message names the thing that is wrong and how to fix it."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for close matches of `name` among `choices`, or ''."""
    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""
