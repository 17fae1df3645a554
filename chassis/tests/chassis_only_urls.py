"""Only the routes the chassis gives every service."""

from chassis.urls import chassis_urlpatterns

urlpatterns = chassis_urlpatterns()
