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
    """A dependency (the Temporal server, the template processes) did not answer or is busy;
    retrying is safe."""


def clause(text: str) -> str:
    """A library's or a sub-check's sentence as a clause after a colon: no capital (unless
    it starts an acronym or a name in quotes) and no final period, so that the sentence
    built around it reads as one."""
    text = text.strip().rstrip(".")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text
