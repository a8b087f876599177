"""The errors rksearch raises for things a user can fix: one base, so callers catch them by class.

Each subclass keeps the built-in base it always had (`ValueError` for a bad spec or study file,
`RuntimeError` for data, database and cluster problems), so code that caught those still does.
Their messages are one line a user can act on; the command-line entry points print it after
``error:`` and exit with status 2.
"""

from __future__ import annotations


class RksearchError(Exception):
    """Base of every error whose message tells the user what to change."""


__all__ = ["RksearchError"]
