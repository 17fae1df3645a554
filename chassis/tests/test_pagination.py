"""Pagination: a page and its count in one statement, the same answers as Django's paginator."""

import pytest
from django.contrib.contenttypes.models import ContentType
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from chassis.pagination import LabPagination


@pytest.fixture(autouse=True)
def rows(db):
    """A few rows to page through (content types are the one model the chassis' test project has)."""
    ContentType.objects.bulk_create(ContentType(app_label="pagination", model=f"thing{n}") for n in range(5))


def _page(queryset, page, size=2):
    paginator = LabPagination()
    paginator.page_size = size
    rows = paginator.paginate_queryset(queryset, Request(APIRequestFactory().get("/things/", {"page": page})))
    return paginator, rows


@pytest.mark.django_db
def test_a_page_and_its_count_come_in_one_statement(django_assert_num_queries):
    """Ensure a page of model rows costs one statement, with the count Django's paginator gives."""
    rows_in_order = list(ContentType.objects.order_by("id"))
    assert len(rows_in_order) > 3
    with django_assert_num_queries(1):
        paginator, rows = _page(ContentType.objects.order_by("id"), 2)
    assert paginator.page.paginator.count == len(rows_in_order)
    assert paginator.page.paginator.num_pages == (len(rows_in_order) + 1) // 2
    assert rows == rows_in_order[2:4]
    assert not hasattr(rows[0], "_lab_page_total")  # the rows look as Django loads them


@pytest.mark.django_db
def test_past_the_last_page_is_a_404_and_an_empty_list_a_page(django_assert_num_queries):
    """Ensure a page past the last is still a 404, and an empty list's first page has a count of 0."""
    total = ContentType.objects.count()
    with pytest.raises(NotFound):
        _page(ContentType.objects.order_by("id"), total)
    paginator, rows = _page(ContentType.objects.filter(model="no-such-model").order_by("id"), 1)
    assert rows == [] and paginator.page.paginator.count == 0


@pytest.mark.django_db
def test_querysets_that_cannot_carry_their_count_are_counted_apart(django_assert_num_queries):
    """Ensure values() and distinct querysets are paginated as Django does, with a count of their own."""
    for queryset in (ContentType.objects.order_by("id").values("id"), ContentType.objects.order_by("id").distinct()):
        with django_assert_num_queries(2):
            paginator, rows = _page(queryset, 1)
            rows = list(rows)
        assert paginator.page.paginator.count == ContentType.objects.count()
        assert len(rows) == 2


@pytest.mark.django_db
@pytest.mark.parametrize("page", [10**12, 10**30])
def test_a_page_far_past_the_last_is_a_404_not_an_offset_the_database_refuses(page):
    """Ensure page=10**30 is counted before any rows are asked for: a 404, never an OFFSET too large (a 500)."""
    with pytest.raises(NotFound):
        _page(ContentType.objects.order_by("id"), page)
