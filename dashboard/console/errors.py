"""Error pages: HTML for people, the lab's JSON error body for the APIs (``/api/``, ``/v1/``)."""

from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string

from chassis.errors import error_body

_JSON_PREFIXES = ("/api/", "/v1/", "/health/", "/metrics")


def _page(request, status: int, title: str, message: str, code: str):
    if request.path.startswith(_JSON_PREFIXES):
        return JsonResponse(error_body(code, message), status=status)
    # No request context: an error page must not depend on the session or the database.
    html = render_to_string("console/error.html", {"title": title, "message": message, "status": status})
    return HttpResponse(html, status=status)


def not_found(request, exception=None):
    return _page(request, 404, "Not found", f"Nothing here: {request.path}", "not_found")


def server_error(request):
    return _page(
        request, 500, "Unexpected error", "The dashboard hit an unexpected error; it has been logged.", "server_error"
    )


def forbidden(request, exception=None):
    return _page(request, 403, "Not allowed", "You may not do this here.", "permission_denied")


def bad_request(request, exception=None):
    return _page(request, 400, "Bad request", "The request could not be understood.", "bad_request")
