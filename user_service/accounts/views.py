"""Thin HTTP views: validate with an input serializer, call a service or selector, serialize."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from chassis.auth import IsLabUser, IsStaff
from chassis.errors import ErrorOutput

from . import selectors, services
from .serializers import (
    AddressInput,
    AddressOutput,
    AddressUpdateInput,
    LoginInput,
    MeOutput,
    MeUpdateInput,
    PasswordChangeInput,
    RefreshInput,
    RegisterInput,
    TokenPairOutput,
    UserCreatedOutput,
    UserListOutput,
    UserSearchQuery,
)
from .throttles import (
    LoginAccountThrottle,
    LoginEmailThrottle,
    LoginIpThrottle,
    PasswordChangeThrottle,
    RegisterIpThrottle,
)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})

ERROR_400 = OpenApiResponse(ErrorOutput, description="Invalid input; `fields` names each problem.")
ERROR_401 = OpenApiResponse(ErrorOutput, description="Missing, invalid or refused token or credentials.")
ERROR_403 = OpenApiResponse(ErrorOutput, description="Logged in, but not allowed.")
ERROR_404 = OpenApiResponse(ErrorOutput, description="Not found (or not yours).")
ERROR_429 = OpenApiResponse(ErrorOutput, description="Too many attempts; see the Retry-After header.")
ERROR_503_REVOCATION = OpenApiResponse(
    ErrorOutput,
    description="The token revocation list (Redis) is unavailable: nothing was changed (`revocation_unavailable`).",
)


def validated(serializer_class, data, **kwargs) -> dict:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class LabApiView(generics.GenericAPIView):
    """A view with one input and one output serializer.

    ``get_serializer`` gives the input serializer to the browsable API when it
    draws a POST/PATCH form, and the output serializer otherwise.
    """

    input_serializer_class = None
    output_serializer_class = None

    def get_serializer_class(self):
        request = getattr(self, "request", None)
        if request is not None and request.method in WRITE_METHODS and self.input_serializer_class:
            return self.input_serializer_class
        return self.output_serializer_class


class PublicAuthView(LabApiView):
    """An auth endpoint that anybody may call, whatever Authorization header they send.

    No authentication runs, so a stale access token sent by habit does not
    block a refresh; the 401s these views answer still carry WWW-Authenticate.
    """

    authentication_classes = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request):
        return 'Bearer realm="lab"'


@extend_schema(tags=["auth"], auth=[])
class RegisterApi(PublicAuthView):
    """Create a customer account.

    The email is stored in lower case and must be unused; the password must pass Django's validators.
    Throttled per client IP (`REGISTER_RATE_PER_IP`).
    """

    name = "Register"
    input_serializer_class = RegisterInput
    output_serializer_class = UserCreatedOutput
    throttle_classes = [RegisterIpThrottle]

    @extend_schema(
        summary="Create a customer account",
        request=RegisterInput,
        responses={201: UserCreatedOutput, 400: ERROR_400, 429: ERROR_429},
    )
    def post(self, request):
        user = services.user_create(**validated(RegisterInput, request.data))
        return Response(UserCreatedOutput(user).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["auth"], auth=[])
class LoginApi(PublicAuthView):
    """Log in with email and password.

    Throttled per client IP, per email from one client and per email from all clients (a wider cap);
    a wrong email and a wrong password get the same 401.
    """

    name = "Log in"
    input_serializer_class = LoginInput
    output_serializer_class = TokenPairOutput
    throttle_classes = [LoginIpThrottle, LoginAccountThrottle, LoginEmailThrottle]

    @extend_schema(
        summary="Log in: trade email and password for an access and a refresh token",
        request=LoginInput,
        responses={200: TokenPairOutput, 400: ERROR_400, 401: ERROR_401, 429: ERROR_429},
    )
    def post(self, request):
        pair = services.user_login(**validated(LoginInput, request.data))
        return Response(TokenPairOutput(pair).data)


@extend_schema(tags=["auth"], auth=[])
class RefreshApi(PublicAuthView):
    """Trade a refresh token for a new access + refresh pair.

    Each refresh token works once: presenting a used one again revokes every session of the account.
    """

    name = "Refresh tokens"
    input_serializer_class = RefreshInput
    output_serializer_class = TokenPairOutput

    @extend_schema(
        summary="Trade a refresh token for a new pair (the old refresh token is revoked)",
        request=RefreshInput,
        responses={200: TokenPairOutput, 400: ERROR_400, 401: ERROR_401},
    )
    def post(self, request):
        pair = services.refresh_token_rotate(token=validated(RefreshInput, request.data)["refresh"])
        return Response(TokenPairOutput(pair).data)


@extend_schema(tags=["auth"], auth=[])
class LogoutApi(PublicAuthView):
    """Revoke a refresh token, and every access token of its session, in every service (within a second)."""

    name = "Log out"
    input_serializer_class = RefreshInput

    @extend_schema(
        summary="Log out: revoke a refresh token and the access tokens of its session",
        request=RefreshInput,
        responses={204: None, 400: ERROR_400, 401: ERROR_401, 503: ERROR_503_REVOCATION},
    )
    def post(self, request):
        services.refresh_token_revoke(token=validated(RefreshInput, request.data)["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["me"])
class MeApi(LabApiView):
    """The logged-in user's profile; only the name can be changed."""

    name = "My profile"
    permission_classes = [IsLabUser]
    input_serializer_class = MeUpdateInput
    output_serializer_class = MeOutput

    def get_object(self):
        return selectors.user_get_active(user_id=self.request.user.id)

    @extend_schema(summary="The logged-in user", responses={200: MeOutput, 401: ERROR_401})
    def get(self, request):
        return Response(MeOutput(self.get_object()).data)

    @extend_schema(
        summary="Change your name",
        request=MeUpdateInput,
        responses={200: MeOutput, 400: ERROR_400, 401: ERROR_401},
    )
    def patch(self, request):
        data = validated(MeUpdateInput, request.data)
        user = services.user_update(user=self.get_object(), **data)
        return Response(MeOutput(user).data)


@extend_schema(tags=["me"])
class PasswordChangeApi(LabApiView):
    """Change your password. Every token of the account (refresh and access) is revoked: every device logs in again."""

    name = "Change my password"
    permission_classes = [IsLabUser]
    input_serializer_class = PasswordChangeInput
    throttle_classes = [PasswordChangeThrottle]

    @extend_schema(
        summary="Change your password (every refresh and access token is revoked)",
        request=PasswordChangeInput,
        responses={204: None, 400: ERROR_400, 401: ERROR_401, 429: ERROR_429, 503: ERROR_503_REVOCATION},
    )
    def post(self, request):
        data = validated(PasswordChangeInput, request.data)
        user = selectors.user_get_active(user_id=request.user.id)
        services.user_password_change(user=user, **data)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["me"])
class AddressListApi(LabApiView):
    """Your postal addresses (paginated), and adding one. Country is an ISO 3166-1 alpha-2 code."""

    name = "My addresses"
    permission_classes = [IsLabUser]
    input_serializer_class = AddressInput
    output_serializer_class = AddressOutput

    def get_queryset(self):
        return selectors.address_list(user_id=self.request.user.id)

    @extend_schema(summary="Your addresses", responses={200: AddressOutput(many=True), 401: ERROR_401})
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(AddressOutput(page, many=True).data)

    @extend_schema(
        summary="Add an address (at most 20)",
        request=AddressInput,
        responses={201: AddressOutput, 400: ERROR_400, 401: ERROR_401},
    )
    def post(self, request):
        address = services.address_create(user_id=request.user.id, data=validated(AddressInput, request.data))
        return Response(AddressOutput(address).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["me"], parameters=[OpenApiParameter("address_id", OpenApiTypes.INT, OpenApiParameter.PATH)])
class AddressDetailApi(LabApiView):
    """One of your addresses. Another user's address answers 404, exactly as a missing one."""

    name = "My address"
    permission_classes = [IsLabUser]
    input_serializer_class = AddressUpdateInput
    output_serializer_class = AddressOutput

    def get_object(self):
        return selectors.address_get(user_id=self.request.user.id, address_id=self.kwargs["address_id"])

    @extend_schema(summary="One of your addresses", responses={200: AddressOutput, 401: ERROR_401, 404: ERROR_404})
    def get(self, request, address_id):
        return Response(AddressOutput(self.get_object()).data)

    @extend_schema(
        summary="Change some fields of one of your addresses",
        request=AddressUpdateInput(partial=True),
        responses={200: AddressOutput, 400: ERROR_400, 401: ERROR_401, 404: ERROR_404},
    )
    def patch(self, request, address_id):
        address = self.get_object()
        data = validated(AddressUpdateInput, request.data, partial=True)
        return Response(AddressOutput(services.address_update(address=address, data=dict(data))).data)

    @extend_schema(summary="Delete one of your addresses", responses={204: None, 401: ERROR_401, 404: ERROR_404})
    def delete(self, request, address_id):
        services.address_delete(address=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["staff"])
class UserListApi(LabApiView):
    """Every user with their address count, for staff. `?search=` matches email or name."""

    name = "Users (staff)"
    permission_classes = [IsStaff]
    output_serializer_class = UserListOutput

    @extend_schema(
        summary="Every user, for staff",
        parameters=[UserSearchQuery],
        responses={200: UserListOutput(many=True), 400: ERROR_400, 401: ERROR_401, 403: ERROR_403},
    )
    def get(self, request):
        search = validated(UserSearchQuery, request.query_params)["search"]
        page = self.paginate_queryset(selectors.user_list(search=search.strip()))
        return self.get_paginated_response(UserListOutput(page, many=True).data)
