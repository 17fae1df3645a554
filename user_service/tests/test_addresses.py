"""/api/users/me/addresses/: CRUD, validation, isolation between users, the limit of 20."""

import threading

import pytest
from django.db import connection

from accounts.models import MAX_ADDRESSES_PER_USER, Address

from .helpers import assert_error, client_for

LIST = "/api/users/me/addresses/"


def detail(address_id) -> str:
    return f"{LIST}{address_id}/"


def address_body(**overrides) -> dict:
    return {
        "label": "Home",
        "line1": "12 rue des Lilas",
        "line2": "",
        "city": "Lyon",
        "postal_code": "69003",
        "country": "fr",
        **overrides,
    }


def add_addresses(user, count):
    Address.objects.bulk_create(
        Address(user=user, label=f"A{i}", line1="1 Main St", city="Town", postal_code="1000", country="BE")
        for i in range(count)
    )


@pytest.mark.django_db
def test_create_and_read_an_address(user_client, user):
    """Ensure an address is created (country stored in upper case) and read back in the list and alone."""
    response = user_client.post(LIST, address_body(line2="3rd floor"), format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["country"] == "FR" and created["line2"] == "3rd floor" and created["created_at"]
    assert {"id", "label", "line1", "line2", "city", "postal_code", "country"} <= set(created)
    assert Address.objects.get().user_id == user.pk
    listing = user_client.get(LIST).json()
    assert listing["count"] == 1 and listing["results"] == [created]
    assert user_client.get(detail(created["id"])).json() == created


@pytest.mark.django_db
def test_line2_is_optional(user_client):
    """Ensure line2 may be left out and defaults to an empty string."""
    body = address_body()
    del body["line2"]
    response = user_client.post(LIST, body, format="json")
    assert response.status_code == 201 and response.json()["line2"] == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"country": "XX"}, "country"),
        ({"country": "FRA"}, "country"),
        ({"country": 33}, "country"),
        ({"label": "l" * 51}, "label"),
        ({"line1": ""}, "line1"),
        ({"line2": "x" * 201}, "line2"),
        ({"city": None}, "city"),
        ({"postal_code": "9" * 21}, "postal_code"),
    ],
)
def test_create_refuses_bad_fields(user_client, overrides, field):
    """Ensure an unknown country, an over-long or missing field is a 400 on that field and creates nothing."""
    assert_error(user_client.post(LIST, address_body(**overrides), format="json"), 400, "invalid", field)
    assert not Address.objects.exists()


@pytest.mark.django_db
def test_patch_changes_only_the_fields_sent(user_client, user):
    """Ensure PATCH changes the given fields and validates them."""
    address = user_client.post(LIST, address_body(), format="json").json()
    response = user_client.patch(detail(address["id"]), {"city": "Paris", "postal_code": "75011"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {**address, "city": "Paris", "postal_code": "75011"}
    assert_error(user_client.patch(detail(address["id"]), {"country": "ZZ"}, format="json"), 400, "invalid", "country")
    assert_error(user_client.patch(detail(address["id"]), {"colour": "red"}, format="json"), 400, "invalid")
    assert Address.objects.get().country == "FR"


@pytest.mark.django_db
def test_delete_an_address(user_client):
    """Ensure DELETE answers 204 and the address is gone (a second DELETE is a 404)."""
    address = user_client.post(LIST, address_body(), format="json").json()
    assert user_client.delete(detail(address["id"])).status_code == 204
    assert not Address.objects.exists()
    assert_error(user_client.delete(detail(address["id"])), 404, "not_found")


@pytest.mark.django_db
def test_users_never_see_each_others_addresses(user, make_user):
    """Ensure another user's address is invisible: not listed, 404 to read, change or delete, and left intact."""
    mallory = make_user()
    theirs = Address.objects.create(
        user=user, label="Home", line1="1 Main St", city="Oslo", postal_code="0150", country="NO"
    )
    intruder = client_for(mallory)
    assert intruder.get(LIST).json()["count"] == 0
    assert_error(intruder.get(detail(theirs.pk)), 404, "not_found")
    assert_error(intruder.patch(detail(theirs.pk), {"city": "Bergen"}, format="json"), 404, "not_found")
    assert_error(intruder.delete(detail(theirs.pk)), 404, "not_found")
    theirs.refresh_from_db()
    assert theirs.city == "Oslo"
    assert client_for(user).get(detail(theirs.pk)).status_code == 200


@pytest.mark.django_db
def test_addresses_need_a_user_token(api):
    """Ensure anonymous calls are 401."""
    assert_error(api.get(LIST), 401, "not_authenticated")
    assert_error(api.post(LIST, address_body(), format="json"), 401, "not_authenticated")


@pytest.mark.django_db
def test_address_limit(user_client, user):
    """Ensure the 21st address is a 400 address_limit_reached and is not stored."""
    add_addresses(user, MAX_ADDRESSES_PER_USER - 1)
    assert user_client.post(LIST, address_body(), format="json").status_code == 201
    assert_error(user_client.post(LIST, address_body(), format="json"), 400, "address_limit_reached")
    assert Address.objects.filter(user=user).count() == MAX_ADDRESSES_PER_USER


@pytest.mark.django_db(transaction=True)
def test_address_limit_holds_under_concurrent_creation(make_user):
    """Ensure concurrent creations two below the limit end at exactly the limit."""
    owner = make_user()
    add_addresses(owner, MAX_ADDRESSES_PER_USER - 2)
    barrier = threading.Barrier(6)
    statuses = []

    def create():
        try:
            client = client_for(owner)
            barrier.wait()
            statuses.append(client.post(LIST, address_body(), format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 201, 400, 400, 400, 400]
    assert Address.objects.filter(user=owner).count() == MAX_ADDRESSES_PER_USER


@pytest.mark.django_db
def test_address_list_is_paginated_in_few_queries(user_client, user, django_assert_max_num_queries):
    """Ensure the list is paginated and costs a count and one page query, however many addresses."""
    add_addresses(user, 15)
    with django_assert_max_num_queries(2):
        body = user_client.get(LIST, {"page_size": 10}).json()
    assert body["count"] == 15 and len(body["results"]) == 10 and body["next"]
    assert len(user_client.get(LIST, {"page": 2, "page_size": 10}).json()["results"]) == 5
