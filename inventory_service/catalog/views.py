"""The public API: the catalog for everyone, its management for staff.

Views are thin: validate with an input serializer, call one selector or
service, answer with an output serializer.
"""

from __future__ import annotations

from django.core.cache import cache
from django.db import DatabaseError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from chassis.auth import IsStaff
from chassis.errors import ErrorOutput
from chassis.lab import resilience

from . import selectors, services
from .serializers import (
    MovementOutput,
    ProductCreateInput,
    ProductDetailOutput,
    ProductListOutput,
    ProductListQuery,
    ProductRestockInput,
    ProductUpdateInput,
)

_ERROR_DESCRIPTIONS = {
    400: "Invalid input: `fields` says what is wrong with which field.",
    401: "No valid token.",
    403: "The token is valid but not allowed here.",
    404: "No such resource.",
    409: "Refused because of the current state (see `code`).",
    503: "The database or the stock rows are busy or unavailable; try again.",
}


def errors(*codes: int) -> dict:
    """OpenAPI responses for the error statuses ``codes``, all in the chassis' error format."""
    return {code: OpenApiResponse(ErrorOutput, description=_ERROR_DESCRIPTIONS[code]) for code in codes}


class InputFormMixin:
    """Lets the browsable API pre-fill its forms with the input serializer of each method.

    Views here are plain ``APIView``s; DRF's renderer looks for ``get_serializer``.
    """

    input_serializers: dict = {}

    def get_serializer(self, *args, **kwargs):
        serializer_class = self.input_serializers.get(self.request.method)
        if serializer_class is None:
            return serializers.Serializer()  # nothing to offer for this method
        return serializer_class(*args, **kwargs)


def paginated(view: APIView, request: Request, queryset, serializer_class) -> Response:
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


# The columns ProductListOutput shows: a list page loads no others (timestamps, stock counters).
LIST_COLUMNS = ("sku", "name", "description", "price_cents", "currency", "active", "stock__available")
LIST_PARAMS = ("search", "sku", "include_inactive")  # ProductListQuery's fields
_LIST_DEFAULTS: dict = {}


def _list_params(request: Request) -> dict:
    """The list's validated query; a list asked for with none of its parameters gets their defaults at once."""
    if any(name in request.query_params for name in LIST_PARAMS):
        query = ProductListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        return query.validated_data
    if not _LIST_DEFAULTS:
        query = ProductListQuery(data={})
        query.is_valid(raise_exception=True)
        _LIST_DEFAULTS.update(query.validated_data)
    return _LIST_DEFAULTS


class ProductListCreateApi(InputFormMixin, APIView):
    """The catalog: active products ordered by sku, with the units available now.

    Staff may create products (`POST`) with their initial stock, and list
    inactive ones with `?include_inactive=1`.
    """

    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS
    input_serializers = {"POST": ProductCreateInput}

    def get_permissions(self):
        return [IsStaff()] if self.request.method == "POST" else [AllowAny()]

    @extend_schema(
        operation_id="products_list",
        parameters=[ProductListQuery],
        responses={200: ProductListOutput(many=True), **errors(400, 404)},
    )
    def get(self, request: Request) -> Response:
        params = _list_params(request)
        include_inactive = params["include_inactive"] and request.user.is_staff
        key = f"lab:fallback:catalog:{int(include_inactive)}:{request.get_full_path()}"
        try:
            products = selectors.product_list(
                search=params["search"],
                skus=params.get("sku"),
                include_inactive=include_inactive,
            ).only(*LIST_COLUMNS)
            response = paginated(self, request, products, ProductListOutput)
        except DatabaseError:
            # The fallback switch: a catalog page may be served from the last good copy, marked
            # stale; stock for a reservation never is (reservations do not come through here).
            cached = cache.get(key) if resilience.switches()["fallback"]["enabled"] else None
            if cached is None:
                raise
            return Response({**cached, "stale": True}, headers={"X-Lab-Stale": "true"})
        try:
            cache.set(key, dict(response.data), timeout=24 * 3600)
        except Exception:  # noqa: BLE001 — the catalog answers without its copy when the cache is down
            pass
        return response

    @extend_schema(
        operation_id="products_create",
        request=ProductCreateInput,
        responses={201: ProductDetailOutput, **errors(400, 401, 403, 503)},
    )
    def post(self, request: Request) -> Response:
        serializer = ProductCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        product = services.product_create(**serializer.validated_data)
        return Response(ProductDetailOutput(product).data, status=status.HTTP_201_CREATED)


class ProductDetailApi(InputFormMixin, APIView):
    """One product (active or not) with its stock: available, reserved, sold, initial, restocked.

    Staff may change its name, description, price and active flag (`PATCH`);
    the sku and currency never change.
    """

    input_serializers = {"PATCH": ProductUpdateInput}

    def get_permissions(self):
        return [AllowAny()] if self.request.method in ("GET", "HEAD", "OPTIONS") else [IsStaff()]

    @extend_schema(operation_id="products_retrieve", responses={200: ProductDetailOutput, **errors(404)})
    def get(self, request: Request, sku: str) -> Response:
        return Response(ProductDetailOutput(selectors.product_get(sku=sku)).data)

    @extend_schema(
        operation_id="products_update",
        request=ProductUpdateInput,
        responses={200: ProductDetailOutput, **errors(400, 401, 403, 404)},
    )
    def patch(self, request: Request, sku: str) -> Response:
        serializer = ProductUpdateInput(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        product = services.product_update(product=selectors.product_get(sku=sku), **serializer.validated_data)
        return Response(ProductDetailOutput(product).data)


class ProductRestockApi(InputFormMixin, APIView):
    """Staff: add units to a product's available stock (a RESTOCK movement in the ledger)."""

    permission_classes = [IsStaff]
    input_serializers = {"POST": ProductRestockInput}

    @extend_schema(
        operation_id="products_restock",
        request=ProductRestockInput,
        responses={200: ProductDetailOutput, **errors(400, 401, 403, 404, 409, 503)},
    )
    def post(self, request: Request, sku: str) -> Response:
        serializer = ProductRestockInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        product = services.product_restock(product=selectors.product_get(sku=sku), **serializer.validated_data)
        return Response(ProductDetailOutput(product).data)


class ProductMovementListApi(APIView):
    """Staff: the stock ledger of one product, newest first. It is append-only."""

    permission_classes = [IsStaff]
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    @extend_schema(
        operation_id="products_movements_list",
        responses={200: MovementOutput(many=True), **errors(401, 403, 404)},
    )
    def get(self, request: Request, sku: str) -> Response:
        movements = selectors.movement_list(product=selectors.product_get(sku=sku))
        return paginated(self, request, movements, MovementOutput)
