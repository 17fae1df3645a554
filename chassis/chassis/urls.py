"""Routes every service mounts: health, metrics, OpenAPI schema, Swagger UI, the /_lab/ control API,
and the browsable API's login and logout (``rest_framework:login``/``logout``, :mod:`chassis.browsable`).

A service's ``config/urls.py``::

    from chassis.urls import chassis_urlpatterns
    urlpatterns = [*chassis_urlpatterns(), path("api/", include("catalog.urls"))]
    handler404 = "chassis.errors.not_found"
    ...
"""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import browsable
from .health import health
from .lab.views import FaultDetailApi, FaultsApi, ResilienceApi
from .metrics import metrics_view

# In DRF's namespace, where its templates look for the login and logout links;
# they replace ``rest_framework.urls`` (Django's session login), which must not be mounted too.
_browsable_auth = (
    [
        path("login/", browsable.login_view, name="login"),
        path("logout/", browsable.logout_view, name="logout"),
    ],
    "rest_framework",
)


def chassis_urlpatterns() -> list:
    return [
        path("api-auth/", include(_browsable_auth)),
        path("health/", health, name="health"),
        path("metrics", metrics_view, name="metrics"),
        path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
        path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
        path("_lab/faults/", FaultsApi.as_view(), name="lab-faults"),
        path("_lab/faults/<str:fault_id>/", FaultDetailApi.as_view(), name="lab-fault"),
        path("_lab/resilience/", ResilienceApi.as_view(), name="lab-resilience"),
    ]


handlers = {
    "handler400": "chassis.errors.bad_request",
    "handler403": "chassis.errors.permission_denied",
    "handler404": "chassis.errors.not_found",
    "handler500": "chassis.errors.server_error",
}
