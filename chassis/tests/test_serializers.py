"""Output serializers rendered by FastRepresentationMixin: DRF's own output, for less CPU."""

from django.core.exceptions import ObjectDoesNotExist
from rest_framework import fields as drf_fields
from rest_framework import serializers

from chassis.serializers import FastRepresentationMixin


class Related:
    def __init__(self, level):
        self.level = level


class Row:
    def __init__(self, n, *, related=True, note=None):
        self.n = n
        self.name = f"row {n}"
        self.note = note
        self._related = Related(n * 10) if related else None

    @property
    def related(self):
        if self._related is None:
            raise ObjectDoesNotExist("no related row")
        return self._related

    def label(self):
        return f"label {self.n}"

    @property
    def broken(self):
        raise AttributeError("not here")


class Plain(serializers.Serializer):
    n = serializers.IntegerField()
    name = serializers.CharField()
    note = serializers.CharField(allow_null=True)
    level = serializers.IntegerField(source="related.level")
    label = serializers.CharField()  # a method: DRF calls it
    broken = serializers.CharField(default="fallback")
    skipped = serializers.CharField(source="broken", required=False)
    computed = serializers.SerializerMethodField()
    whole = serializers.SerializerMethodField()

    def get_computed(self, row):
        return (row["n"] if isinstance(row, dict) else row.n) * 2

    def get_whole(self, row):
        return sorted(row) if isinstance(row, dict) else None


class Fast(FastRepresentationMixin, Plain):
    pass


ROWS = [Row(1), Row(2, related=False), Row(3, note="a note")]


def test_fast_output_is_drfs_output():
    """Ensure every kind of field renders as DRF renders it: dotted sources, a missing related row, None,
    a method, a default, a skipped field, method fields, and a dict given as the row."""
    assert Fast(ROWS, many=True).data == Plain(ROWS, many=True).data
    row = {"n": 4, "name": "dict row", "note": None, "related": {"level": 40}, "label": "x", "broken": "b"}
    assert Fast(row).data == Plain(row).data
    assert Fast(ROWS[1]).data["level"] is None


def test_plain_fields_skip_drfs_generic_attribute_lookup(monkeypatch):
    """Ensure a page of rows reads its plain fields with getattr: DRF's generic lookup runs only where needed."""
    calls = []
    lookup = drf_fields.get_attribute

    def counting(instance, attrs):
        calls.append(tuple(attrs))
        return lookup(instance, attrs)

    monkeypatch.setattr(drf_fields, "get_attribute", counting)
    assert len(Fast(ROWS, many=True).data) == len(ROWS)
    # Only the method (label), the missing attribute (broken, and skipped on it) and the method
    # fields (source "*") go DRF's way; n, name, note and related.level do not.
    assert sorted(set(calls)) == [(), ("broken",), ("label",)]
    assert len(calls) == 5 * len(ROWS)


def test_a_classs_fields_are_built_once_and_copied_for_each_instance(monkeypatch):
    """Ensure three serializers of one class build their fields once, each getting fields of its own."""
    monkeypatch.delattr(Fast, "_chassis_fields", raising=False)  # built by an earlier test
    built = []
    get_fields = serializers.Serializer.get_fields

    def counting(self):
        built.append(type(self).__name__)
        return get_fields(self)

    monkeypatch.setattr(serializers.Serializer, "get_fields", counting)
    instances = [Fast(row) for row in ROWS]
    assert [instance.data for instance in instances] == [Plain(row).data for row in ROWS]
    assert built.count("Fast") == 1
    first, second = instances[0].fields["name"], instances[1].fields["name"]
    assert first is not second and first.parent is instances[0] and second.parent is instances[1]
