"""One error type for everything the user can fix.

The CLI turns an :class:`AdaptError` into a single line on stderr and exit code 2, so the
message must name the file / column / value at fault and say what to do about it.
"""

from __future__ import annotations


class AdaptError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""


class NeedsCuda(AdaptError):
    """A rung or option that only works on a CUDA GPU was asked for on a machine without one."""


class BudgetExceeded(Exception):
    """A rung cannot finish even a minimal evaluation within its time budget; the ladder records
    it as *skipped* with this message (which holds the timing estimate)."""
