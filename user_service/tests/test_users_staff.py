"""GET /api/users/ (staff only)."""

import pytest

from accounts.models import Address

from .helpers import assert_error, client_for

URL = "/api/users/"


@pytest.mark.django_db
def test_staff_list_is_for_staff_only(api, user_client):
    """Ensure an anonymous call is a 401 and a customer's is a 403."""
    assert_error(api.get(URL), 401, "not_authenticated")
    assert_error(user_client.get(URL), 403, "permission_denied")


@pytest.mark.django_db
def test_staff_list_shows_users_with_address_counts(staff_client, staff, user):
    """Ensure staff see every user, paginated, with their address count."""
    Address.objects.create(user=user, label="Home", line1="1 Main St", city="Rome", postal_code="00100", country="IT")
    body = staff_client.get(URL).json()
    assert body["count"] == 2 and body["previous"] is None
    carol = next(row for row in body["results"] if row["id"] == user.pk)
    assert carol["email"] == "carol@example.test" and carol["address_count"] == 1
    assert set(carol) == {"id", "email", "name", "is_staff", "is_active", "date_joined", "last_login", "address_count"}
    assert "password" not in str(body)


@pytest.mark.django_db
def test_staff_list_search(staff_client, make_user):
    """Ensure ?search= matches a part of the email or of the name, in any case."""
    make_user(email="zoe@shop.test", name="Zoe Keller")
    make_user(email="yann@shop.test", name="Yann Zorro")

    def emails(params):
        return sorted(row["email"] for row in staff_client.get(URL, params).json()["results"])

    assert emails({"search": "ZOE"}) == ["zoe@shop.test"]
    assert emails({"search": "zo"}) == ["yann@shop.test", "zoe@shop.test"]
    assert emails({"search": "nobody"}) == []
    assert_error(staff_client.get(URL, {"search": "s" * 101}), 400, "invalid", "search")


@pytest.mark.django_db
def test_staff_list_costs_two_queries_whatever_the_page(staff, make_user, django_assert_max_num_queries):
    """Ensure the staff list does not run one query per user (no N+1 on the address count)."""
    for number in range(25):
        owner = make_user()
        Address.objects.bulk_create(
            Address(user=owner, label=f"A{i}", line1="1 St", city="C", postal_code="1", country="DE")
            for i in range(number % 3)
        )
    client = client_for(staff)
    with django_assert_max_num_queries(2):
        body = client.get(URL, {"page_size": 100}).json()
    assert body["count"] == 26 and len(body["results"]) == 26
    assert sum(row["address_count"] for row in body["results"]) == sum(n % 3 for n in range(25))


@pytest.mark.django_db
def test_staff_list_rejects_bad_pages(staff_client):
    """Ensure a page past the last is a 404, and a page or size that is no positive integer a 400 naming it."""
    assert_error(staff_client.get(URL, {"page": 99}), 404, "not_found")
    assert_error(staff_client.get(URL, {"page": "abc"}), 400, "invalid", "page")
    assert_error(staff_client.get(URL, {"page_size": "-3"}), 400, "invalid", "page_size")
