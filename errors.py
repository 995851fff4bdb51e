"""Domain errors: what went wrong in the product's words, with no HTTP in them."""


class NurtureError(Exception):
    """Base of every error a person can act on; the message is the sentence they read."""


class NotFoundError(NurtureError):
    """The record does not exist, or belongs to another company."""


class ConflictError(NurtureError):
    """The request is valid but the record's state does not allow it."""


class ValidationError(NurtureError):
    """The request names something invalid (a variable, a time, a sender...)."""


class AuthenticationError(NurtureError):
    """No API key, or one we do not know."""


class PermissionDeniedError(NurtureError):
    """The key is known but its role may not do this."""


class AddOnDisabledError(PermissionDeniedError):
    """The company has not enabled the campaigns add-on."""


class UnavailableError(NurtureError):
    """A dependency (the Temporal server) did not answer; retrying is safe."""
