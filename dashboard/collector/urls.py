from django.urls import path

from . import views

urlpatterns = [
    path("v1/traces", views.otlp_traces, name="otlp-traces"),
    path("api/traces/", views.trace_list_api, name="trace-list"),
    path("api/traces/<str:trace_id>/", views.trace_detail_api, name="trace-detail"),
    path("api/metrics/summary/", views.metrics_summary_api, name="metrics-summary"),
]
