from django.urls import path

from . import views

app_name = "console"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("partials/overview/", views.overview_partial, name="overview_partial"),
    path("faults/", views.faults, name="faults"),
    path("partials/faults/", views.faults_partial, name="faults_partial"),
    path("faults/clear-all/", views.faults_clear_all, name="faults_clear_all"),
    path("faults/presets/<slug:slug>/", views.preset_apply, name="preset"),
    path("faults/<str:service>/add/", views.fault_add, name="fault_add"),
    path("faults/<str:service>/<str:fault_id>/clear/", views.fault_clear, name="fault_clear"),
    path("resilience/", views.resilience, name="resilience"),
    path("partials/resilience/", views.resilience_partial, name="resilience_partial"),
    path("resilience/saga/", views.saga_mode, name="saga_mode"),
    path("resilience/<str:service>/", views.switches_update, name="switches_update"),
    path("resilience/<str:service>/reset/", views.breakers_reset, name="breakers_reset"),
    path("flows/", views.flows_page, name="flows"),
    path("flows/<slug:slug>/run/", views.flow_run, name="flow_run"),
    path("flows/runs/<uuid:run_id>/", views.flow_detail, name="flow_detail"),
    path("flows/runs/<uuid:run_id>/trace/", views.flow_trace, name="flow_trace"),
    path("traces/", views.traces_page, name="traces"),
    path("partials/traces/", views.traces_partial, name="traces_partial"),
    path("traces/<str:trace_id>/", views.trace_detail, name="trace_detail"),
    path("data/", views.data, name="data"),
    path("audit/", views.audit, name="audit"),
    path("partials/audit/", views.audit_partial, name="audit_partial"),
    path("load/", views.load, name="load"),
    path("load/start/", views.load_start, name="load_start"),
    path("load/<str:run_id>/", views.load_run, name="load_run"),
    path("load/<str:run_id>/live/", views.load_run_partial, name="load_run_partial"),
    path("load/<str:run_id>/stop/", views.load_stop, name="load_stop"),
    path("load/<str:run_id>/report/", views.load_report, name="load_report"),
    path("labs/", views.labs, name="labs"),
    path("labs/<str:name>/", views.labs, name="lab"),
    path("login/", views.login, name="login"),
    path("logout/", views.logout, name="logout"),
]
