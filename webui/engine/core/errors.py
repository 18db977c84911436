"""Errors the UI shows as messages and the API returns as 4xx: user input, not bugs."""


class KiriError(Exception):
    """Base of errors whose message is meant for the user."""


class InvalidRequest(KiriError):
    """A request field is out of range or malformed; `field` names it for API clients."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class ModelNotFound(KiriError):
    pass


class ModelLoadError(KiriError):
    pass


class PickleRefused(ModelLoadError):
    pass


class NoModelAvailable(KiriError):
    pass


class Interrupted(Exception):
    """Raised inside a denoising loop to stop a job; finished images are kept."""


class Skipped(Exception):
    """Raised inside a denoising loop to drop the current batch and go on with the next."""
