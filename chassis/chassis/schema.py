"""What every service's OpenAPI schema says beyond each view's own annotations, so that it tells the truth.

drf-spectacular documents what a view declares; the chassis answers more than
that, the same way on every service. :class:`LabAutoSchema` (the services'
``DEFAULT_SCHEMA_CLASS``) adds, to each operation, the answers it can give:

* 400 where there is input to refuse (a body, query parameters, a required header);
* 401 where a bearer token is read (a bad one is refused, even where none is needed);
* 403 where a permission is checked, 429 where a throttle counts;
* 404 where a path names a thing, and on a paginated list past its last page (or a ``page`` that is no page);
* 414 (gunicorn's own text/html page) where parameters make the URL long:
  gunicorn reads at most 4094 bytes of request line;
* 503 everywhere: the database (or a peer, or a request past its deadline) is unavailable.

An optional query parameter may be sent empty (``?status=``): the input
serializers read it as absent, as from an HTML form (``allowEmptyValue``).

It also documents request bodies as JSON only (the browsable API's HTML forms
post form data, but no client of the API does), PATCH bodies as the view
validates them (DRF does not make a serializer partial by itself: a view says
so), and an input serializer's ``schema_requires_one_of`` ("send at least one of
these fields") as an ``anyOf``. The extensions below give the chassis' text
fields the pattern they validate: no control characters, ISO country codes.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.serializers import ListSerializer

from .countries import COUNTRY_CODES

# Every character chassis.fields.no_control_characters refuses: Unicode's Cc, and the bidi controls.
NO_CONTROL_CHARACTERS = r"^[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$"


def country_pattern() -> str:
    """A pattern matching exactly the ISO 3166-1 alpha-2 codes, in upper or lower case (CountryField takes both)."""
    by_first: dict[str, list[str]] = {}
    for code in sorted(COUNTRY_CODES):
        by_first.setdefault(code[0], []).append(code[1])
    alternatives = (
        f"[{first}{first.lower()}][{''.join(s + s.lower() for s in seconds)}]" for first, seconds in by_first.items()
    )
    return f"^(?:{'|'.join(alternatives)})$"


class LabJWTScheme(OpenApiAuthenticationExtension):
    target_class = "chassis.auth.LabJWTAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


class TextFieldSchema(OpenApiSerializerFieldExtension):
    """chassis.fields.TextField: a string without control characters."""

    target_class = "chassis.fields.TextField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)  # noqa: SLF001 (drf-spectacular: how a field extension builds on the default)
        if direction == "request":
            schema["pattern"] = NO_CONTROL_CHARACTERS
        return schema


class CountryFieldSchema(OpenApiSerializerFieldExtension):
    """chassis.fields.CountryField: an ISO 3166-1 alpha-2 code, in any case; answered in upper case."""

    target_class = "chassis.fields.CountryField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)  # noqa: SLF001 (drf-spectacular: how a field extension builds on the default)
        schema.pop("minLength", None)
        schema.pop("maxLength", None)
        if direction == "request":
            schema["pattern"] = country_pattern()
        else:
            schema["pattern"] = "^[A-Z]{2}$"
        return schema


_ANSWERS = {
    400: "Invalid input: `fields` says what is wrong with which field.",
    401: "No valid token: missing where one is needed, or malformed, expired or refused.",
    403: "The token is valid, but this caller may not do this.",
    404: "Not found (or not yours).",
    429: "Too many requests; try again after the Retry-After header's seconds.",
    503: "Unavailable for now (the database, a peer service, or the request's deadline passed); try again.",
}
_PAGING = ("page", "page_size")  # chassis.pagination: a positive integer, an empty one refused
_PAGE_PAST_THE_END = "Not found; on a list, `page` is past the last page."
_URI_TOO_LONG = {
    "description": "The request line is over 4094 bytes: gunicorn refuses it with its own HTML page.",
    "content": {"text/html": {"schema": {"type": "string"}}},
}


class LabAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the answers the chassis gives on every service (see the module doc)."""

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation["responses"]
        error = self.resolve_serializer(_error_output(), "response").ref
        parameters = operation.get("parameters", [])

        def add(code: int, description: str | None = None, **extra) -> None:
            responses.setdefault(
                str(code),
                {
                    "description": description or _ANSWERS[code],
                    "content": {"application/json": {"schema": error}},
                    **extra,
                },
            )

        for parameter in parameters:
            if parameter["in"] == "header" and parameter["name"] == _idempotency().HEADER:
                # Every service validates the key with the chassis (chassis.idempotency).
                parameter["schema"] = {"type": "string", "pattern": _idempotency().KEY_PATTERN}
            if parameter["in"] == "query" and not parameter.get("required") and parameter["name"] not in _PAGING:
                # An input serializer reads query parameters as an HTML form: an empty value
                # (``?status=``) of an optional one is no filter at all, not a bad one.
                parameter["allowEmptyValue"] = True
        takes_input = "requestBody" in operation or any(
            p["in"] == "query" or (p["in"] == "header" and p.get("required")) for p in parameters
        )
        if takes_input:
            add(400)
        if self.view.get_authenticators():
            add(401)
        if any(not isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            add(403)
        if any(p["in"] == "path" for p in parameters):
            add(404)
        if any(p["in"] == "query" and p["name"] == "page" for p in parameters):
            add(404, _PAGE_PAST_THE_END)
        if any(p["in"] in ("path", "query") for p in parameters):
            responses.setdefault("414", _URI_TOO_LONG)
        if any(_counts(throttle, self.method) for throttle in self.view.get_throttles()):
            add(429, headers={"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}})
        add(503)
        return operation

    def map_parsers(self):
        json_types = [p.media_type for p in self.view.get_parsers() if isinstance(p, JSONParser)]
        return json_types or super().map_parsers()

    def _get_request_for_media_type(self, serializer, direction="request"):
        # drf-spectacular makes every PATCH body partial (all fields optional), as a ModelViewSet
        # does; the lab's views validate with the serializer as they declare it.
        if self.method == "PATCH" and not getattr(serializer, "partial", False):
            self.method = "POST"
            try:
                return super()._get_request_for_media_type(serializer, direction)
            finally:
                self.method = "PATCH"
        return super()._get_request_for_media_type(serializer, direction)

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        # drf-spectacular leaves out a nested list's bounds (``many=True, min_length=1, max_length=50``).
        if isinstance(field, ListSerializer) and schema.get("type") == "array":
            if field.min_length is not None or not field.allow_empty:
                schema.setdefault("minItems", max(field.min_length or 0, 0 if field.allow_empty else 1))
            if field.max_length is not None:
                schema.setdefault("maxItems", field.max_length)
        return schema

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and getattr(serializer, "schema_requires_one_of", False):
            schema["anyOf"] = [{"required": [name]} for name in schema.get("properties", {})]
        return schema


def _counts(throttle, method: str) -> bool:
    """Whether ``throttle`` counts requests of ``method``: the write throttles count writes only."""
    try:
        from .throttling import WRITE_METHODS, UserWriteThrottle
    except ImportError:
        return True
    return method in WRITE_METHODS if isinstance(throttle, UserWriteThrottle) else True


def _idempotency():
    from . import idempotency  # imports the errors module, hence not at the top (see below)

    return idempotency


def _error_output():
    from .errors import ErrorOutput  # errors imports DRF's settings, which import this module

    return ErrorOutput
