"""The one pagination style of every list endpoint: page number, bounded size.

``page`` and ``page_size`` are positive integers; anything else (``0``, ``-3``,
``abc``, ``last``) is refused with a 400 that names the parameter, as the
schema says, rather than answered with a 404 "Invalid page" or quietly
replaced by the default. A ``page_size`` above ``max_page_size`` is cut to it;
a ``page`` past the last page is a 404.
"""

import re

from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination

_POSITIVE_INTEGER = re.compile(r"[0-9]+")


class LabPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_number(self, request, paginator):
        return self._positive_integer(request, self.page_query_param, default=1)

    def get_page_size(self, request):
        size = self._positive_integer(request, self.page_size_query_param, default=self.page_size)
        return min(size, self.max_page_size)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = (
                    f"Number of results to return per page (default {self.page_size}; "
                    f"a larger size than {self.max_page_size} is cut to {self.max_page_size})."
                )
        return parameters

    @staticmethod
    def _positive_integer(request, name: str, *, default: int) -> int:
        value = request.query_params.get(name)
        if value is None:
            return default
        if not _POSITIVE_INTEGER.fullmatch(value) or int(value) < 1:
            raise serializers.ValidationError({name: ["A positive integer is required."]})
        return int(value)


class ReconciliationPagination(LabPagination):
    """Reconciliation pages are larger: the audit walks everything."""

    page_size = 100
    max_page_size = 1000
