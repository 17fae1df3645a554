"""``/_lab/``: the lab admin's API to break a service and to switch its defences.

    GET    /_lab/faults/           the active faults
    PUT    /_lab/faults/           add (or replace, by id) one fault
    DELETE /_lab/faults/           clear every fault
    DELETE /_lab/faults/<id>/      clear one
    GET    /_lab/resilience/       switches + every breaker's state and counters
    PUT    /_lab/resilience/       change some switches (partial), or reset the breakers
    DELETE /_lab/resilience/       every switch back to its default, every breaker closed

Only the lab admin may call them: the dashboard's service identity or a staff user.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from ..errors import NotFound
from . import faults, resilience, store


class FreshStateMixin:
    """The admin reads what was just written, not this process's half-second copy."""

    def initial(self, request, *args, **kwargs):
        store.forget_local()
        super().initial(request, *args, **kwargs)


class IsLabAdmin(permissions.BasePermission):
    """The dashboard (service token) or a staff user."""

    message = "Only the lab admin (the dashboard or a staff user) may change the lab."

    def has_permission(self, request, view):
        user = request.user
        if getattr(user, "is_service", False):
            return user.name == "dashboard"
        return bool(user and user.is_authenticated and user.is_staff)


def _faults_body() -> dict:
    return {"service": settings.SERVICE_NAME, "faults": faults.faults_active()}


class FaultsApi(FreshStateMixin, APIView):
    permission_classes = [IsLabAdmin]

    @extend_schema(summary="List the active faults", responses={200: dict})
    def get(self, request):
        return Response(_faults_body())

    @extend_schema(summary="Inject a fault", request=faults.FaultSerializer, responses={201: dict})
    def put(self, request):
        data = faults.FaultSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fault = faults.fault_add(data=data.validated_data)
        return Response({**_faults_body(), "added": fault}, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Clear every fault", operation_id="lab_faults_clear_all", responses={200: dict})
    def delete(self, request):
        cleared = faults.fault_clear()
        return Response({**_faults_body(), "cleared": cleared})


class FaultDetailApi(FreshStateMixin, APIView):
    permission_classes = [IsLabAdmin]

    @extend_schema(summary="Clear one fault", operation_id="lab_fault_clear", responses={200: dict})
    def delete(self, request, fault_id: str):
        if not faults.fault_clear(fault_id=fault_id):
            raise NotFound(f"No active fault {fault_id}.")
        return Response({**_faults_body(), "cleared": 1})


def _resilience_body() -> dict:
    peers = settings.CHASSIS.get("DEPENDS_ON", [])
    return {
        "service": settings.SERVICE_NAME,
        "switches": resilience.switches(),
        "defaults": resilience.defaults(),
        "breakers": resilience.breaker_states(peers),
        # The last request refused before its first call because a breaker was open (or None).
        "fail_fast": store.read("fail_fast", None),
    }


class ResilienceApi(FreshStateMixin, APIView):
    permission_classes = [IsLabAdmin]

    @extend_schema(summary="Resilience switches and breaker states", responses={200: dict})
    def get(self, request):
        return Response(_resilience_body())

    @extend_schema(summary="Change resilience switches", request=resilience.SwitchesSerializer, responses={200: dict})
    def put(self, request):
        data = resilience.SwitchesSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if changes.pop("reset_breakers", False):
            resilience.breakers_reset(settings.CHASSIS.get("DEPENDS_ON", []))
        resilience.switches_update(changes=changes)
        return Response(_resilience_body())

    @extend_schema(summary="Every switch back to its default, every breaker closed", responses={200: dict})
    def delete(self, request):
        resilience.switches_reset()
        resilience.breakers_reset(settings.CHASSIS.get("DEPENDS_ON", []))
        return Response(_resilience_body())
