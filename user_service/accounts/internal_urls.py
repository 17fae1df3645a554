"""Internal API of the user service, mounted under /internal/.

Empty on purpose: no peer needs to call user_service. Other services verify
user tokens locally with this service's public key, so they keep working
while it is down. An endpoint added here must use
``chassis.auth.ServiceOnly.allow(...)`` and be listed in docs/contracts.md.
"""

urlpatterns: list = []
