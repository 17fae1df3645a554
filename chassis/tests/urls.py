"""A tiny API exercising every chassis piece."""

from django.db import OperationalError
from django.http import Http404
from django.urls import path
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chassis.auth import IsLabUser, IsStaff, ServiceOnly
from chassis.errors import Conflict, PaymentDeclined
from chassis.urls import chassis_urlpatterns, handlers


class ThingIn(serializers.Serializer):
    name = serializers.CharField(max_length=10)
    quantity = serializers.IntegerField(min_value=1, max_value=1000)


class EchoApi(APIView):
    def post(self, request):
        data = ThingIn(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(data.validated_data, status=201)


class BrokenDatabaseApi(APIView):
    def get(self, request):
        raise OperationalError(2003, "Can't connect to MySQL server")


def broken_plain_view(request):
    raise OperationalError(2003, "Can't connect to MySQL server")


class MissingObjectApi(APIView):
    def get(self, request):
        raise Http404("no such thing")


class ConflictApi(APIView):
    def post(self, request):
        raise Conflict("Not enough stock.", code="insufficient_stock", fields={"sku": ["X"]})


class DeclinedApi(APIView):
    def post(self, request):
        raise PaymentDeclined(code="insufficient_funds", headers={"Idempotent-Replayed": "true"}, charge={"id": 1})


class WhoAmIApi(APIView):
    permission_classes = [IsLabUser]

    def get(self, request):
        return Response({"id": request.user.id, "email": request.user.email, "staff": request.user.is_staff})


class StaffApi(WhoAmIApi):
    permission_classes = [IsStaff]


class DeadlineApi(APIView):
    """Records that it ran, and the deadline bound for it."""

    ran: list = []

    def post(self, request):
        from chassis import deadline

        self.ran.append(deadline.current())
        return Response({"deadline": deadline.current()})


class InternalApi(APIView):
    permission_classes = [ServiceOnly.allow("order")]

    def get(self, request):
        return Response({"caller": request.user.name})


urlpatterns = [
    *chassis_urlpatterns(),
    path("echo/", EchoApi.as_view()),
    path("broken-db/", BrokenDatabaseApi.as_view()),
    path("broken-plain/", broken_plain_view),
    path("conflict/", ConflictApi.as_view()),
    path("declined/", DeclinedApi.as_view()),
    path("missing-object/", MissingObjectApi.as_view()),
    path("whoami/", WhoAmIApi.as_view()),
    path("staff/", StaffApi.as_view()),
    path("internal/", InternalApi.as_view()),
    path("deadline/", DeadlineApi.as_view()),
]
globals().update(handlers)
