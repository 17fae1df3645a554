"""Output serializers that render many rows for less CPU, with DRF's output unchanged.

DRF renders each field of each row through ``Field.get_attribute`` and the module
function behind it (a ``Mapping`` check, a "simple callable" inspection at each
step of the source, exception handlers): on a list page that loop is the largest
share of the request. :class:`FastRepresentationMixin` walks a plain field's
source with ``getattr`` instead, and leaves to DRF every case that is not plain:
a ``Mapping`` row, a field that overrides ``get_attribute`` (related fields,
``source="*"``), an attribute that is missing or callable. What each field's
``to_representation`` returns, and ``None`` for a missing related object, are
DRF's own.

The mixin also builds a serializer class's fields once: ``ModelSerializer`` derives
them from the model for every instance (once per request), the mixin deep-copies
the ones it built first, as DRF copies declared fields. So it is for output
serializers whose fields are fixed by their class, never by the request or context.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping

from django.core.exceptions import ObjectDoesNotExist
from rest_framework.fields import Field, SkipField
from rest_framework.relations import PKOnlyObject

_fields_lock = threading.Lock()


class FastRepresentationMixin:
    """Put before ``serializers.Serializer`` / ``ModelSerializer`` in an output serializer's bases."""

    def get_fields(self):
        cls = type(self)
        built = cls.__dict__.get("_chassis_fields")
        if built is None:
            with _fields_lock:
                built = cls.__dict__.get("_chassis_fields")
                if built is None:
                    built = super().get_fields()
                    cls._chassis_fields = built
        return copy.deepcopy(built)

    def _fast_plan(self) -> list[tuple[str, tuple[str, ...] | None, Field]]:
        plan = self.__dict__.get("_chassis_plan")
        if plan is None:
            plan = [
                (
                    field.field_name,
                    tuple(field.source_attrs)
                    if field.source_attrs and type(field).get_attribute is Field.get_attribute
                    else None,
                    field,
                )
                for field in self._readable_fields
            ]
            self.__dict__["_chassis_plan"] = plan
        return plan

    def to_representation(self, instance):
        if isinstance(instance, Mapping):
            return super().to_representation(instance)
        ret = {}
        for name, attrs, field in self._fast_plan():
            if attrs is not None:
                # instance.a.b for the source "a.b", as DRF's get_attribute walks it for a plain object.
                value, plain = instance, True
                try:
                    for attr in attrs:
                        value = getattr(value, attr)
                        if callable(value):
                            plain = False  # DRF calls it, or refuses it: its own path below
                            break
                except ObjectDoesNotExist:
                    value = None  # a missing related object, as DRF renders it
                except (AttributeError, KeyError):
                    plain = False  # a default, null, a skipped field or DRF's error: its own path below
                if plain:
                    ret[name] = None if value is None else field.to_representation(value)
                    continue
            try:
                value = field.get_attribute(instance)
            except SkipField:
                continue
            check_for_none = value.pk if isinstance(value, PKOnlyObject) else value
            ret[name] = None if check_for_none is None else field.to_representation(value)
        return ret
