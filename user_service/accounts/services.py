"""Every write of the user service: accounts, sessions (refresh tokens), addresses."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import authenticate, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from chassis import revocation
from chassis.errors import InvalidRequest, Unavailable

from . import tokens
from .exceptions import AccountUnavailable, InvalidCredentials, TokenRejected
from .models import MAX_ADDRESSES_PER_USER, Address, RefreshToken, User, normalize_email

DUPLICATE_EMAIL = "An account with this email already exists."
# How long a revocation must be kept: the longest life of an access token it refuses, plus the
# verifiers' leeway on exp.
REVOCATION_LEEWAY = 10

log = logging.getLogger("accounts.services")


def _revocation_lifetime() -> int:
    return settings.ACCESS_TOKEN_TTL + REVOCATION_LEEWAY


def _revoke(record, *, what: str, refused: str) -> None:
    """Run ``record`` (a revocation); if the list cannot be written, a 503 saying ``refused``."""
    try:
        record()
    except revocation.RevocationUnavailable as exc:
        log.warning("could not revoke the access tokens of %s: %s", what, exc)
        raise Unavailable(
            f"The token revocation list (Redis) is unavailable, so {refused}. Try again shortly.",
            code="revocation_unavailable",
        ) from exc


def access_tokens_revoke(*, user_id: int) -> None:
    """Refuse, in every service, each access token of the user issued until now.

    Raises :class:`Unavailable` (503) when the revocation cannot be recorded, so the
    caller's transaction is rolled back and nobody is told it happened.
    """
    _revoke(
        lambda: revocation.revoke_user(user_id=user_id, lifetime=_revocation_lifetime()),
        what=f"user {user_id}",
        refused="access tokens already issued could not be cancelled; nothing was changed",
    )


@dataclass(frozen=True)
class TokenPair:
    """What login and refresh answer."""

    access: str
    refresh: str
    expires_in: int
    token_type: str = "Bearer"


def _validate_password(*, password: str, user: User, field: str) -> None:
    try:
        password_validation.validate_password(password, user=user)
    except DjangoValidationError as exc:
        raise ValidationError({field: list(exc.messages)}) from exc


def user_create(*, email: str, password: str, name: str) -> User:
    """Register a customer. A taken email is a 400 on ``email``, even when two requests race."""
    user = User(email=normalize_email(email), name=name.strip())
    _validate_password(password=password, user=user, field="password")
    user.set_password(password)
    try:
        # The unique index decides, not a prior SELECT: two concurrent sign-ups with the
        # same email both pass any check made before the INSERT.
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:
        raise ValidationError({"email": [DUPLICATE_EMAIL]}) from exc
    return user


def user_update(*, user: User, name: str) -> User:
    """Change what a user may change about themselves: their name."""
    user.name = name.strip()
    user.save(update_fields=["name"])
    return user


def user_password_change(*, user: User, old_password: str, new_password: str) -> None:
    """Change a password after checking the old one; every refresh token is revoked."""
    if not user.check_password(old_password):
        raise ValidationError({"old_password": ["Your current password is incorrect."]})
    _validate_password(password=new_password, user=user, field="new_password")
    user_password_set(user=user, password=new_password)


def user_password_set(*, user: User, password: str) -> None:
    """Store a new password and close every session opened with the old one, access tokens included."""
    with transaction.atomic():
        user.set_password(password)
        user.save(update_fields=["password"])
        refresh_token_revoke_all(user_id=user.pk)
        access_tokens_revoke(user_id=user.pk)  # last: if it fails, the password is not changed


def user_staff_set(*, user: User, staff: bool) -> bool:
    """Make ``user`` staff (and superuser) or not; return whether it changed.

    A change of role ends every session of the account, access tokens included:
    a demoted instructor's dashboard session loses its controls within a second,
    and a promoted one logs in again to get a token that says so.
    """
    if user.is_staff == staff and user.is_superuser == staff:
        return False
    with transaction.atomic():
        user.is_staff = user.is_superuser = staff
        user.save(update_fields=["is_staff", "is_superuser"])
        refresh_token_revoke_all(user_id=user.pk)
        access_tokens_revoke(user_id=user.pk)
    return True


def user_login(*, email: str, password: str) -> TokenPair:
    """Check the credentials and open a session: a new access and refresh token.

    Unknown email, wrong password and disabled account give the same 401, and
    Django's backend hashes the password even for an unknown email, so neither
    the answer nor its timing tells which accounts exist.
    """
    user = authenticate(request=None, email=normalize_email(email), password=password)
    if user is None:
        raise InvalidCredentials()
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(last_login=timezone.now())
        return _token_pair_issue(user=user, sid=uuid.uuid4().hex)


def _token_pair_issue(*, user: User, sid: str) -> TokenPair:
    not_before = revocation.user_valid_after(user.pk)
    access = tokens.token_issue(user=user, kind=tokens.ACCESS, sid=sid, not_before=not_before)
    refresh = tokens.token_issue(user=user, kind=tokens.REFRESH, sid=sid, not_before=not_before)
    RefreshToken.objects.create(
        jti=refresh.jti,
        user=user,
        expires_at=dt.datetime.fromtimestamp(refresh.expires_at, tz=dt.UTC),
    )
    return TokenPair(access=access.token, refresh=refresh.token, expires_in=settings.ACCESS_TOKEN_TTL)


def refresh_token_rotate(*, token: str) -> TokenPair:
    """Trade a refresh token for a new pair; the one presented is revoked.

    A refresh token presented after it was revoked has been copied: the
    legitimate client already used it, or logged out. Every refresh token of
    that user is then revoked (the thief and the owner both have to log in
    again) and the answer is a 401.
    """
    claims = tokens.refresh_claims_decode(token=token)
    now = timezone.now()
    reused = False
    with transaction.atomic():
        record = (
            RefreshToken.objects.select_for_update()
            .select_related("user")
            .filter(jti=claims["jti"], user_id=int(claims["sub"]))
            .first()
        )
        if record is None:
            raise TokenRejected("This refresh token is not valid.")
        if record.revoked_at is not None:
            refresh_token_revoke_all(user_id=record.user_id)
            # Best effort: the thief's access token too. The refusal below happens either way.
            try:
                revocation.revoke_user(user_id=record.user_id, lifetime=_revocation_lifetime())
            except revocation.RevocationUnavailable as exc:
                log.warning("could not revoke the access tokens of user %s: %s", record.user_id, exc)
            reused = True
        elif record.expires_at <= now:
            raise TokenRejected("This refresh token has expired; log in again.", code="token_expired")
        elif not record.user.is_active:
            raise AccountUnavailable()
        else:
            record.revoked_at = now
            record.save(update_fields=["revoked_at"])
            # The session goes on: logging out with the new refresh token ends it, old access tokens too.
            sid = claims.get("sid") if isinstance(claims.get("sid"), str) else uuid.uuid4().hex
            return _token_pair_issue(user=record.user, sid=sid)
    # Raised after the block so that the revocation above is committed.
    if reused:
        raise TokenRejected(
            "This refresh token was already used or revoked. As a precaution against a stolen copy, "
            "every session of this account is now closed: log in again.",
            code="token_reused",
        )
    raise AssertionError("unreachable")  # pragma: no cover


def refresh_token_revoke(*, token: str) -> None:
    """Log out: revoke one refresh token, and every access token of its session, in every service.

    Revoking an already revoked one is a no-op. If the session's access tokens cannot
    be revoked (the revocation list is unavailable) nothing is revoked: a 503.
    """
    claims = tokens.refresh_claims_decode(token=token)
    with transaction.atomic():
        issued = RefreshToken.objects.filter(jti=claims["jti"], user_id=int(claims["sub"]))
        if not issued.filter(revoked_at__isnull=True).update(revoked_at=timezone.now()) and not issued.exists():
            raise TokenRejected("This refresh token is not valid.")
        sid = claims.get("sid")
        if isinstance(sid, str) and sid:
            _revoke(
                lambda: revocation.revoke_session(sid=sid, lifetime=_revocation_lifetime()),
                what=f"session {sid}",
                refused="this session's access token could not be cancelled; you are not logged out",
            )


def refresh_token_revoke_all(*, user_id: int) -> int:
    """Revoke every live refresh token of a user; return how many were live."""
    return RefreshToken.objects.filter(user_id=user_id, revoked_at__isnull=True).update(revoked_at=timezone.now())


def address_create(*, user_id: int, data: dict) -> Address:
    """Add an address to a user, refusing the one beyond ``MAX_ADDRESSES_PER_USER``."""
    with transaction.atomic():
        # Locking the user row serialises concurrent creations for one user, so two
        # requests at 19 addresses cannot both pass the count and end at 21.
        if not User.objects.select_for_update().filter(pk=user_id, is_active=True).exists():
            raise AccountUnavailable()
        if Address.objects.filter(user_id=user_id).count() >= MAX_ADDRESSES_PER_USER:
            raise InvalidRequest(
                f"An account keeps at most {MAX_ADDRESSES_PER_USER} addresses; delete one first.",
                code="address_limit_reached",
            )
        return Address.objects.create(user_id=user_id, **data)


def address_update(*, address: Address, data: dict) -> Address:
    """Change some fields of an address (the caller already checked it is the user's)."""
    for field, value in data.items():
        setattr(address, field, value)
    if data:
        address.save(update_fields=list(data))
    return address


def address_delete(*, address: Address) -> None:
    address.delete()


def lab_account_ensure(*, email: str, name: str, password: str, staff: bool) -> str:
    """Make one seeded lab account exist as described; return created, updated or unchanged.

    Staff lab accounts are also superusers. A password that fails the
    validators is refused, so the lab never seeds an account a student could
    not have created. Nothing is written when the account is already right.
    """
    email = normalize_email(email)
    with transaction.atomic():
        user = User.objects.select_for_update().filter(email=email).first()
        created = user is None
        if created:
            user = User(email=email)
        was_staff = user.is_staff and user.is_superuser
        wanted = {"name": name, "is_staff": staff, "is_superuser": staff, "is_active": True}
        changed = [field for field, value in wanted.items() if getattr(user, field) != value]
        for field in changed:
            setattr(user, field, wanted[field])
        new_password = created or not user.check_password(password)
        if new_password:
            _validate_password(password=password, user=user, field="password")
            user.set_password(password)
        if created:
            user.save()
            return "created"
        if new_password:
            refresh_token_revoke_all(user_id=user.pk)
            changed.append("password")
        if not changed:
            return "unchanged"
        user.save(update_fields=changed)
        if new_password or was_staff != staff:
            # A new password or a change of role ends the sessions opened before it (access tokens too).
            refresh_token_revoke_all(user_id=user.pk)
            access_tokens_revoke(user_id=user.pk)
        return "updated"
