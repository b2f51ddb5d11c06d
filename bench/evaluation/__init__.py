"""Mechanism against baseline, on any model: the evaluation harness behind ``mnemoflow eval`` (``make eval``).

Each mechanism's evaluation (one module here) runs the mechanism and its baseline(s) on the same model, the same
data (files under ``data/``, written for the project) and the same budgets, one item at a time, and measures every
attempt: its score, calls, tokens and wall time. :func:`~mnemoflow.evaluation.harness.evaluate` runs one and returns
the result in the shape :mod:`~mnemoflow.evaluation.report` writes.
"""

from __future__ import annotations

import importlib

from mnemoflow.evaluation.harness import EvalOptions, Evaluation, evaluate

__all__ = ["MECHANISMS", "EvalOptions", "Evaluation", "evaluate", "evaluation_class"]

MECHANISMS = ("comorag", "tme", "gmemory", "experepair", "l2mac")


def evaluation_class(mechanism: str) -> type[Evaluation]:
    """The evaluation of ``mechanism`` (one of :data:`MECHANISMS`), imported on demand."""
    module = importlib.import_module(f"mnemoflow.evaluation.{mechanism}")
    evaluation: type[Evaluation] = module.EVALUATION
    return evaluation
