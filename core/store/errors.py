"""Model-store exceptions."""


class ModelStoreError(RuntimeError):
    """A model could not be pulled, verified or found; the message says what to do."""


class ModelNotPulled(ModelStoreError):
    """The model is not in the local store yet."""


class HashMismatch(ModelStoreError):
    """An assembled or cached file does not match its pinned SHA-256."""
