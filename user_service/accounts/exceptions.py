"""The 401s of the user service, each with its own machine code.

They subclass DRF's ``AuthenticationFailed`` so that the answer carries the
``WWW-Authenticate`` header a 401 needs, in the chassis error format.
"""

from rest_framework import exceptions


class InvalidCredentials(exceptions.AuthenticationFailed):
    default_detail = "Email or password is incorrect."
    default_code = "invalid_credentials"


class AccountUnavailable(exceptions.AuthenticationFailed):
    default_detail = "This account no longer exists or has been disabled."
    default_code = "account_unavailable"


class TokenRejected(exceptions.AuthenticationFailed):
    """A refresh token refused; ``code`` says why (invalid_token, token_expired, token_reused)."""

    def __init__(self, message: str, code: str = "invalid_token"):
        super().__init__(detail=message, code=code)
