"""What every command shares: the two error kinds (their exit codes) and how it prints."""

from __future__ import annotations


class UsageError(Exception):
    """Bad usage or config: exit code 2."""


class OutcomeError(Exception):
    """A pipeline outcome the user must act on: exit code 1."""


def say(msg: str = "") -> None:
    print(msg, flush=True)
