"""Template context every page gets: who is logged in, what the visitor may do, where things are."""

from django.conf import settings

from . import auth, links


def lab(request):
    staff = auth.current_staff(request)
    return {
        "staff": staff,
        "can_control": staff is not None,
        "public_read": settings.DASHBOARD_PUBLIC_READ,
        "service_links": links.service_links(),
        "labs_available": links.labs_dir() is not None,
    }
