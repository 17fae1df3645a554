"""The one pagination style of every list endpoint: page number, bounded size.

``page`` and ``page_size`` are positive integers; anything else (``0``, ``-3``,
``abc``, ``last``) is refused with a 400 that names the parameter, as the
schema says, rather than answered with a 404 "Invalid page" or quietly
replaced by the default. A ``page_size`` above ``max_page_size`` is cut to it;
a ``page`` past the last page is a 404.

The count comes with the page's rows, in the same statement (``COUNT(*) OVER ()``),
instead of a ``COUNT`` of its own before them: one statement per page, not two,
wherever the database has window functions and the queryset is a plain one of
model instances. An empty page falls back to Django's count, so a page past the
last is a 404 as before.
"""

import re

from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import Count, QuerySet, Window
from django.db.models.query import ModelIterable
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination

_POSITIVE_INTEGER = re.compile(r"[0-9]+")
_TOTAL = "_lab_page_total"
# The largest offset asked of the database with the rows; a page beyond it (page=10**30) is counted first, and
# is a 404, instead of an OFFSET no database takes (a 500).
_MAX_OFFSET = 2**31 - 1


def _counts_with_rows(queryset) -> bool:
    """True for a queryset whose rows can carry their total: plain model rows, nothing grouped or combined."""
    if not isinstance(queryset, QuerySet) or queryset._iterable_class is not ModelIterable:  # noqa: SLF001
        return False
    query = queryset.query
    return (
        not query.distinct
        and not query.combinator
        and query.group_by is None
        and not query.is_sliced
        and _TOTAL not in query.annotations
        and connections[queryset.db].features.supports_over_clause
    )


class WindowCountPaginator(Paginator):
    """Django's paginator, with the count read from the page's own rows when it can be."""

    def page(self, number):
        if (
            isinstance(number, bool)
            or not isinstance(number, int)
            or number < 1
            or not _counts_with_rows(self.object_list)
        ):
            return super().page(number)
        bottom = (number - 1) * self.per_page
        if bottom > _MAX_OFFSET:
            return super().page(number)
        rows = list(self.object_list.annotate(**{_TOTAL: Window(Count("*"))})[bottom : bottom + self.per_page])
        if not rows and number > 1:
            return super().page(number)  # past the last page (or emptied since): Django's count says which
        self.__dict__["count"] = getattr(rows[0], _TOTAL) if rows else 0
        for row in rows:
            delattr(row, _TOTAL)
        self.validate_number(number)
        return Page(rows, number, self)


class LabPagination(PageNumberPagination):
    django_paginator_class = WindowCountPaginator
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
