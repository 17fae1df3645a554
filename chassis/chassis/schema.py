"""Teaches drf-spectacular about the chassis authentication (bearer JWT)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class LabJWTScheme(OpenApiAuthenticationExtension):
    target_class = "chassis.auth.LabJWTAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
