"""What the console remembers: the flows it ran and each student's lab progress (the lab's own state lives in
the services)."""

import uuid

from django.db import models


class FlowRun(models.Model):
    """One run of a scripted journey, kept so its page (hops, order, trace) can be reopened and shared."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    flow = models.CharField(max_length=40)
    title = models.CharField(max_length=100)
    request_id = models.CharField(max_length=64, db_index=True)
    trace_id = models.CharField(max_length=32, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_by = models.CharField(max_length=254, blank=True, default="")
    duration_ms = models.FloatField(default=0)
    ok = models.BooleanField(default=False)
    expected = models.CharField(max_length=200, blank=True, default="")
    outcome = models.TextField(blank=True, default="")
    customer = models.CharField(max_length=254, blank=True, default="")
    hops = models.JSONField(default=list)
    order = models.JSONField(null=True, blank=True)
    notes = models.JSONField(default=list)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.flow} {self.started_at:%H:%M:%S} {'ok' if self.ok else 'not ok'}"


class LabProgress(models.Model):
    """One student's record of one guided lab: the engine's progress document, kept as it gives it.

    The lab engine (``labctl.labs``) owns the document's shape; the dashboard
    only stores it, so a report built here reads exactly like ``labctl lab report``.
    """

    student = models.CharField(max_length=254)
    lab = models.CharField(max_length=100)
    data = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["student", "lab"], name="lab_progress_one_per_student")]
        ordering = ["student", "lab"]

    def __str__(self) -> str:
        return f"{self.student} · {self.lab}"
