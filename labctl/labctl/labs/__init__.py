"""The guided labs' engine, shared by ``labctl lab`` and the dashboard's Labs page.

A lab lives in ``labs/NN-slug/``: ``lab.md`` (front matter + Markdown) and
``steps.py`` (its steps, checks, solves and questions, written with
:mod:`labctl.labs.model`). :class:`~labctl.labs.engine.Engine` loads them,
runs checks and solves against the running lab through its public HTTP
surfaces (:class:`~labctl.labs.context.LabContext`), keeps each student's
progress in a :class:`~labctl.labs.store.Store` and builds the lab report.
"""
