"""Spans received from the services (OTLP), kept for a bounded time in the dashboard's database."""

from django.db import models


class Span(models.Model):
    """One finished span. Times are Unix nanoseconds, as OTLP sends them."""

    trace_id = models.CharField(max_length=32, db_index=True)
    span_id = models.CharField(max_length=16)
    parent_span_id = models.CharField(max_length=16, blank=True, default="")
    service = models.CharField(max_length=64, db_index=True)
    name = models.CharField(max_length=255)
    kind = models.CharField(max_length=16, default="internal")
    start_ns = models.BigIntegerField(db_index=True)
    end_ns = models.BigIntegerField()
    duration_ms = models.FloatField()
    status = models.CharField(max_length=8, default="unset")  # ok | error | unset
    status_message = models.CharField(max_length=255, blank=True, default="")
    request_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    # The order a span worked on, when it says (lab.order_id) or its URL shows it: the audit links by it.
    order_id = models.CharField(max_length=32, blank=True, default="", db_index=True)
    attributes = models.JSONField(default=dict)
    events = models.JSONField(default=list)
    # About how much room the row takes (collector.otlp.stored_size): the table is pruned by total size too.
    size_bytes = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["trace_id", "span_id"], name="span_unique_in_trace")]

    def __str__(self) -> str:
        return f"{self.service} {self.name} ({self.trace_id}/{self.span_id})"
