"""How the offline stand-in answers L2MAC's tool calls, so the graph can be seen working without a model.

The plan is one instruction (the task itself); the step writes a README.md naming the task, then declares the step
complete. It builds nothing real: set OPENAI_BASE_URL to use a model.
"""

from __future__ import annotations

import json
from typing import Any

from mnemoflow.llm import ToolCall, ToolTurn, offline_tool_handler

Message = dict[str, Any]


def _task(messages: list[Message]) -> str:
    task = next((str(m.get("content", "")) for m in messages if str(m.get("content", "")).startswith("The task:")), "")
    return task.removeprefix("The task:").strip()


@offline_tool_handler("plan_steps")
def offline_plan(messages: list[Message], tools: list[str]) -> ToolTurn:
    steps = [f"Write a README.md that states the task: {_task(messages)}"]
    return ToolTurn("", (ToolCall("offline-plan", "plan_steps", json.dumps({"steps": steps})),), "tool_calls")


@offline_tool_handler("step_complete")
def offline_step(messages: list[Message], tools: list[str]) -> ToolTurn:
    started = max(i for i, m in enumerate(messages) if str(m.get("content", "")).startswith("Carry out instruction"))
    turns = sum(1 for m in messages[started:] if m.get("role") == "assistant")
    if turns == 0:
        readme = f"# Offline run\n\nThe offline model wrote only this file. The task was:\n\n{_task(messages)}\n"
        arguments = json.dumps({"files": [{"path": "README.md", "content": readme}]})
        return ToolTurn("", (ToolCall("offline-write", "write_files", arguments),), "tool_calls")
    return ToolTurn("", (ToolCall(f"offline-complete-{turns}", "step_complete", "{}"),), "tool_calls")
