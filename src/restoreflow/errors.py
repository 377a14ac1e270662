"""What a user reads of a validation error: pydantic's message of one error, on one line,
without the "Value error, " prefix pydantic puts before a validator's own message."""

from __future__ import annotations


def pydantic_message(err: dict) -> str:
    """The one-line message of one entry of ``ValidationError.errors()``."""
    return " ".join(str(err["msg"]).removeprefix("Value error, ").split())
