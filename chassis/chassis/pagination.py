"""The one pagination style of every list endpoint: page number, bounded size."""

from rest_framework.pagination import PageNumberPagination


class LabPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class ReconciliationPagination(LabPagination):
    """Reconciliation pages are larger: the audit walks everything."""

    page_size = 100
    max_page_size = 1000
