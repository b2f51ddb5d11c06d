"""Each mechanism's view of the memory its graphs build, one module per mechanism.

Every module has a ``router`` (its pages and APIs), ``run_links(run)``: the views a run page links to, given the
run's summary (graph, namespace, thread, input and outputs), and ``record_links(record)``: the views a record's page
links to (the record as ``views.node_json`` gives it), each as ``{"label": ..., "url": ...}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mnemoflow.flows.server.ui.mechanisms import comorag, gmemory, l2mac, tme

__all__ = ["MODULES", "record_links", "routers", "run_links"]

MODULES = (comorag, tme, l2mac, gmemory)


def routers() -> list[APIRouter]:
    """Every mechanism view's router."""
    return [module.router for module in MODULES]


def run_links(run: dict[str, Any]) -> list[dict[str, str]]:
    """The mechanism views a run's page links to."""
    return [link for module in MODULES for link in module.run_links(run)]


def record_links(record: dict[str, Any]) -> list[dict[str, str]]:
    """The mechanism views a record's page links to."""
    return [link for module in MODULES for link in module.record_links(record)]
