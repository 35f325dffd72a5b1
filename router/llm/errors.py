"""Router-LLM exceptions (library-level; the HTTP layer maps them to status codes).

The client errors (:class:`LLMError`, :class:`LLMUnavailable`) belong to the one HTTP client in
:mod:`core.http`; they are named here too so router code has one place to import its errors from.
"""

from core.http import LLMError, LLMUnavailable

__all__ = ["LLMError", "LLMUnavailable", "ServerError"]


class ServerError(RuntimeError):
    """A managed LLM server could not be installed, started or stopped; the message says why."""
