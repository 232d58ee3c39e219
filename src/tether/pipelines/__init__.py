"""Pipelines: ordered steps, each an ordinary task, advanced, paused and undone as one.

``spec`` checks a submitted document, ``control`` creates and steers pipelines,
``advance`` settles a pipeline when one of its steps changes status, and ``moves``
is the one place that changes a pipeline's status.
"""
