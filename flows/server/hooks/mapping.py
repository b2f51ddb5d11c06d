"""From a verified delivery to a flow run: does the hook accept it, and with which parameters.

:func:`accepts` filters (events, then ``when``); :func:`map_parameters` evaluates the hook's JMESPath
expressions over the payload. A payload that lacks what an expression needs is the sender's problem: it is
refused with 422 and a reason naming the parameter, the expression and the path that found nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from mnemoflow.flows.server.hooks.config import HookSpec
from mnemoflow.flows.server.hooks.providers import Delivery, HookRejected

__all__ = ["accepts", "map_parameters"]


def _truthy(value: Any) -> bool:
    """JMESPath's truth: false, null, and empty strings, lists and objects are false; 0 is true."""
    if value is None or value is False:
        return False
    return not (isinstance(value, str | list | dict) and len(value) == 0)


def _evaluate(compiled: ParsedResult, payload: Any, what: str) -> Any:
    try:
        return compiled.search(payload)
    except (JMESPathError, TypeError, ValueError, RecursionError) as exc:
        raise HookRejected(422, f"{what}: `{compiled.expression}` failed on the payload: {exc}") from exc


def accepts(hook: HookSpec, delivery: Delivery) -> str | None:
    """``None`` when the delivery should start a run; otherwise why it is ignored (the receiver answers 2xx).

    Slack's url_verification challenges and GitHub's ``ping`` never start a run.

    Raises:
        HookRejected: 422 when ``when`` cannot be evaluated on this payload (e.g. a function given a null).
    """
    if delivery.challenge is not None:
        return "a url_verification challenge starts no run"
    if hook.provider == "github" and delivery.event == "ping":
        return "GitHub's ping checks the hook and starts no run"
    if hook.events is not None and delivery.event not in hook.events:
        return f"event {delivery.event!r} is not in events [{', '.join(hook.events)}]"
    condition = hook.when_expression
    if condition is not None and not _truthy(_evaluate(condition, delivery.payload, "when condition")):
        return f"when condition `{condition.expression}` is false"
    return None


def map_parameters(hook: HookSpec, payload: Any, *, max_bytes: int = 1_048_576) -> dict[str, Any]:
    """The flow-run parameters of ``hook`` for ``payload``, each its JMESPath expression's result, in all at most
    ``max_bytes`` of JSON (an expression can repeat the payload: ``[@, @, @]``).

    Raises:
        HookRejected: 422 when an expression finds nothing (null), or a null under a key of a multiselect hash
            (``{question: issue.title}``) or in a multiselect list, or fails (a function given the wrong type),
            or gives a value that is not JSON (``to_number('NaN')``), or the parameters are too large.
    """
    parameters: dict[str, Any] = {}
    size = 0
    for name, compiled in hook.parameter_expressions.items():
        what = f"parameter {name!r}"
        value = _evaluate(compiled, payload, what)
        missing = _missing(compiled.parsed, value, payload)
        if missing:
            raise HookRejected(422, f"{what}: `{compiled.expression}` found nothing at {missing} in the payload")
        try:
            size += len(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError, RecursionError) as exc:
            raise HookRejected(422, f"{what}: `{compiled.expression}` gave a value that is not JSON: {exc}") from exc
        if size > max_bytes:
            raise HookRejected(422, f"the parameters are more than {max_bytes} bytes of JSON (the largest body a hook takes)")
        parameters[name] = value
    return parameters


def _missing(node: Mapping[str, Any], value: Any, payload: Any) -> str:
    """Where a result is null: the path (and the key of a multiselect), or an empty string when nothing is."""
    kind = node.get("type")
    if kind == "multi_select_dict" and isinstance(value, dict):
        places = [
            f"{_where(pair['children'][0], payload)} (key {pair['value']!r})"
            for pair in node["children"]
            if value.get(pair["value"]) is None
        ]
        return ", ".join(places)
    if kind == "multi_select_list" and isinstance(value, list):
        return ", ".join(
            f"{_where(child, payload)} (item {index})" for index, child in enumerate(node["children"]) if value[index] is None
        )
    return _where(node, payload) if value is None else ""


def _where(node: Mapping[str, Any], payload: Any) -> str:
    """The first prefix of a plain path (fields and indexes) that finds nothing, quoted; else the expression."""
    steps = _steps(node)
    if steps is None:
        return "this expression" if node.get("type") != "literal" else "a literal null"
    current, path = payload, ""
    for step in steps:
        if isinstance(step, int):
            path += f"[{step}]"
            current = current[step] if isinstance(current, list) and -len(current) <= step < len(current) else None
        else:
            path += ("." if path else "") + (step if step.isidentifier() else json.dumps(step))
            current = current.get(step) if isinstance(current, dict) else None
        if current is None:
            break
    return repr(path)


def _steps(node: Mapping[str, Any]) -> list[str | int] | None:
    """``a.b[0].c`` as ``['a', 'b', 0, 'c']``; ``None`` for anything but fields, subexpressions and indexes."""
    kind = node.get("type")
    if kind == "field":
        return [node["value"]]
    if kind == "index":
        return [node["value"]]
    if kind in ("subexpression", "index_expression"):
        steps: list[str | int] = []
        for child in node["children"]:
            part = _steps(child)
            if part is None:
                return None
            steps += part
        return steps
    return None
