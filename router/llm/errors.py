"""Router-LLM exceptions (library-level; the HTTP layer maps them to status codes)."""


class LLMError(RuntimeError):
    """The LLM answered, but not usefully (bad status, malformed body)."""


class LLMUnavailable(LLMError):
    """The LLM endpoint could not be reached after the configured retries."""


class ServerError(RuntimeError):
    """A managed LLM server could not be installed, started or stopped; the message says why."""
