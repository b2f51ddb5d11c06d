"""L2MAC's control unit (``l2mac.*`` nodes; graph ``graphs/library/l2mac.yaml``).

plan -> [start_instruction -> guard -> call_model -> run_tools -> (fix | continue -> guard) | complete ->
summarize_step] per instruction -> finish; when the context would overflow, summarize_overflow -> start_instruction.

Each instruction starts from a fresh context: the system message, the task, the instruction with a summary of
earlier steps and the file list. State lives in the file store (:mod:`mnemoflow.nodes.l2mac.files`), not in the dialog. When
the next call would not fit the context window, the oldest messages are dropped, the model summarizes its progress
and the instruction restarts with that summary, a bounded number of times. A context that ends with a repeated block
of messages raises the sampling temperature, which decays back once the loop is broken. Every node that touches
the store runs holding the thread's claim (:mod:`mnemoflow.nodes.l2mac.claim`): one process runs a thread at a time.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import NodeError
from mnemoflow.llm import ToolCall
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.l2mac import agents
from mnemoflow.nodes.l2mac.checks import Checker, CheckResult
from mnemoflow.nodes.l2mac.claim import claimed, release_thread
from mnemoflow.nodes.l2mac.files import Project, load_project
from mnemoflow.nodes.l2mac.state import L2macState
from mnemoflow.nodes.l2mac.tools import STEP_TOOLS, dispatch, file_listing
from mnemoflow.nodes.l2mac.window import context_size, repeats, tools_size, trim_oldest
from mnemoflow.nodes.registry import NoConfig, node, router
from mnemoflow.nodes.sandbox import Limits

__all__ = ["CallConfig", "GuardConfig", "OverflowConfig", "PlanConfig", "StartConfig", "ToolsConfig"]

Message = dict[str, Any]
FRESH_CONTEXT = 3
"""Messages a fresh context starts with (system, task, instruction); trimming never drops them."""
STEP_TOOLS_SIZE = tools_size(STEP_TOOLS)
LOOP_STEP, CALM_STEP, MAX_TEMPERATURE = 0.4, 0.1, 1.0


class PlanConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_instructions: int = Field(10, ge=1, le=100, description="Most instructions the model's plan may have.")


class StartConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keep_history: bool = Field(
        False, description="Carry the whole dialog into the next instruction (the baseline L2MAC is measured against)."
    )
    summaries: agents.SummaryMode = Field(
        "previous",
        description="Summaries of completed instructions a new one carries: the previous one (the paper's), or all.",
    )


class GuardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reply_tokens: int = Field(1_000, ge=0, description="Room kept in the context window for the model's reply.")


class CallConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_turns: int = Field(
        40,
        ge=1,
        le=1_000,
        description="Model calls one attempt at an instruction may make (ours: the paper has no cap, and a small model "
        "can go round without ever overflowing its context).",
    )


class ToolsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout_s: float = Field(60.0, gt=0, le=3_600, description="Wall-clock limit of one run of the checks.")
    memory_mb: int = Field(1_024, ge=64, le=65_536, description="Address-space limit of the checks' process.")
    tests: bool = Field(True, description="Run the tests as well as the error checks.")
    checker: Checker = Field(
        "pylint", description="The static check: pylint's error codes (the paper's), or only compiling (nothing to install)."
    )
    read_chars: int = Field(14_000, ge=1_000, description="Characters one read_files call may return.")
    run_timeout_s: float = Field(20.0, gt=0, le=3_600, description="Wall-clock limit of one run_python_file call.")
    pytest_timeout_s: float = Field(60.0, gt=0, le=3_600, description="Wall-clock limit of one pytest_files call.")


class OverflowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_restarts: int = Field(30, ge=0, le=100, description="Restarts of one instruction before the run fails (r_max).")
    headroom_tokens: int = Field(700, ge=100, description="Tokens left free for the summary when trimming.")


def _sized(messages: list[Message]) -> dict[str, Any]:
    return {"messages": messages, "context_tokens": context_size(messages) + STEP_TOOLS_SIZE}


async def _fail(project: Project, state: L2macState, reason: str) -> NodeError:
    await project.update_instruction(state.k, status="failed", error=reason)
    await project.set_status("failed")
    return NodeError(f"l2mac: instruction {state.k + 1} of {len(state.instructions)} failed: {reason}")


@node("l2mac.plan", state=L2macState, reads={"task", "instructions", "temperature"}, writes={"instructions"}, config=PlanConfig)
@claimed
async def plan(state: L2macState, config: PlanConfig, context: RunContext) -> dict[str, Any]:
    """Store the instruction registry: the given instructions, or a plan the model gives through a forced tool call."""
    instructions = [text.strip() for text in state.instructions if text.strip()]
    if not instructions:
        planned = await context.llm.forced_tool(
            agents.plan_messages(state.task, config.max_instructions), agents.PLAN_TOOL, temperature=state.temperature
        )
        assert isinstance(planned, agents.PlanSteps)
        instructions = [text.strip() for text in planned.steps if text.strip()]
        if not instructions:
            raise NodeError("l2mac: the model's plan has no instructions")
        if len(instructions) > config.max_instructions:
            # keep every step the model planned: the ones past the limit join the last instruction
            keep = config.max_instructions - 1
            instructions = [*instructions[:keep], "\n".join(instructions[keep:])]
    project = await load_project(context.store, context.namespace, context.thread_id)
    await project.save_plan(state.task, instructions)
    context.log.info("l2mac.planned", instructions=len(instructions))
    return {"instructions": instructions}


@router("l2mac.next_instruction", state=L2macState, reads={"k", "instructions"}, outcomes={"start", "done"})
def next_instruction(state: L2macState, config: NoConfig) -> str:
    """Start the next instruction, or finish when none is left."""
    return "start" if state.k < len(state.instructions) else "done"


@node(
    "l2mac.start_instruction",
    state=L2macState,
    reads={"task", "instructions", "k", "attempt", "summaries", "progress", "messages"},
    writes={"messages", "turn", "outcome", "context_tokens"},
    config=StartConfig,
)
@claimed
async def start_instruction(state: L2macState, config: StartConfig, context: RunContext) -> dict[str, Any]:
    """Load the current instruction into a fresh context: the task, the instruction, the previous instruction's
    summary (or every earlier one: ``summaries: all``), the files."""
    project = await load_project(context.store, context.namespace, context.thread_id)
    message = agents.instruction_message(
        state.k, len(state.instructions), state.instructions[state.k], state.summaries, state.progress,
        file_listing(project), config.summaries,
    )  # fmt: skip
    if config.keep_history and state.messages:
        messages = [*state.messages, message]
    else:
        messages = [{"role": "system", "content": agents.SYSTEM}, agents.task_message(state.task), message]
    await project.update_instruction(state.k, status="active", restarts=state.attempt)
    return {"turn": 0, "outcome": "", **_sized(messages)}


@router(
    "l2mac.guard", state=L2macState, reads={"context_tokens", "context_window"}, outcomes={"call", "overflow"}, config=GuardConfig
)
def guard(state: L2macState, config: GuardConfig) -> str:
    """Call the model while the context and a reply fit the window; otherwise summarize and restart."""
    return "overflow" if state.context_tokens + config.reply_tokens > state.context_window else "call"


@node(
    "l2mac.call_model",
    state=L2macState,
    reads={
        "messages",
        "turn",
        "temperature",
        "sampling_temperature",
        "k",
        "instructions",
        "loops",
        "context_tokens",
        "peak_context_tokens",
    },
    writes={"messages", "turn", "sampling_temperature", "loops", "context_tokens", "peak_context_tokens"},
    config=CallConfig,
)
@claimed
async def call_model(state: L2macState, config: CallConfig, context: RunContext) -> dict[str, Any]:
    """One model turn with the tools; a context that repeats itself raises the temperature, which then decays."""
    if state.turn >= config.max_turns:
        project = await load_project(context.store, context.namespace, context.thread_id)
        raise await _fail(project, state, f"no step_complete after {config.max_turns} model calls (max_turns)")
    looping = repeats(state.messages[FRESH_CONTEXT:])
    current = max(state.sampling_temperature, state.temperature)
    if looping:
        temperature = min(MAX_TEMPERATURE, current + LOOP_STEP)
        context.log.info("l2mac.loop", instruction=state.k, turn=state.turn, temperature=temperature)
    else:
        temperature = max(state.temperature, current - CALM_STEP)
    reply = await context.llm.call_tools(state.messages, STEP_TOOLS, temperature=temperature)
    return {
        "turn": state.turn + 1,
        "sampling_temperature": temperature,
        "loops": state.loops + looping,
        "peak_context_tokens": max(state.peak_context_tokens, state.context_tokens),
        **_sized([*state.messages, reply.message()]),
    }


@node(
    "l2mac.run_tools",
    state=L2macState,
    reads={"messages", "k", "attempt", "turn", "checks", "tool_errors"},
    writes={"messages", "outcome", "checks", "tool_errors", "context_tokens"},
    config=ToolsConfig,
)
@claimed
async def run_tools(state: L2macState, config: ToolsConfig, context: RunContext) -> dict[str, Any]:
    """Run the model's tool calls against the file store, then the checks when it wrote files or asked for them."""
    last = state.messages[-1] if state.messages else {}
    calls = [
        ToolCall(call["id"], call["function"]["name"], call["function"]["arguments"]) for call in last.get("tool_calls") or []
    ]
    if not calls:
        return {"outcome": "continue"}
    project = await load_project(context.store, context.namespace, context.thread_id)
    result = await dispatch(
        calls, project, instruction=state.k, attempt=state.attempt, turn=state.turn,
        limits=Limits(timeout_s=config.timeout_s, memory_mb=config.memory_mb), tests=config.tests,
        read_chars=config.read_chars, checker=config.checker, run_timeout_s=config.run_timeout_s,
        pytest_timeout_s=config.pytest_timeout_s,
    )  # fmt: skip
    checks = list(state.checks)
    if result.check is not None:
        checks.append({"instruction": state.k, "attempt": state.attempt, "turn": state.turn, **result.check.as_dict()})
        await project.update_instruction(
            state.k, turns=state.turn, checks=sum(1 for check in checks if check["instruction"] == state.k)
        )
    outcome = "complete" if result.complete else "fix" if result.check is not None and not result.check.passed else "continue"
    context.log.info(
        "l2mac.tools",
        instruction=state.k,
        turn=state.turn,
        calls=len(calls),
        written=result.written,
        errors=len(result.errors),
        outcome=outcome,
    )
    return {
        "outcome": outcome,
        "checks": checks,
        "tool_errors": [*state.tool_errors, *result.errors],
        **_sized([*state.messages, *result.messages]),
    }


@router("l2mac.after_tools", state=L2macState, reads={"outcome"}, outcomes={"complete", "fix", "continue"})
def after_tools(state: L2macState, config: NoConfig) -> str:
    """Summarize a completed step, ask for a fix when the checks failed, or ask the model to carry on."""
    return state.outcome or "continue"


@node("l2mac.ask_fix", state=L2macState, reads={"messages", "checks"}, writes={"messages", "context_tokens"})
@claimed
async def ask_fix(state: L2macState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Show the model the failed checks and ask it to fix the code."""
    project = await load_project(context.store, context.namespace, context.thread_id)
    report = CheckResult.from_dict(state.checks[-1]).report()
    return _sized([*state.messages, agents.fix_message(report, file_listing(project))])


@node("l2mac.ask_continue", state=L2macState, reads={"messages", "k"}, writes={"messages", "context_tokens"})
@claimed
async def ask_continue(state: L2macState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Ask the model whether the instruction is complete, with the current file list."""
    project = await load_project(context.store, context.namespace, context.thread_id)
    return _sized([*state.messages, agents.cycle_message(state.k, file_listing(project))])


async def _summary(context: RunContext, state: L2macState, request: Message, headroom: int) -> str:
    """A text reply (no tools) to ``request`` at the end of the context, trimmed to fit the window if need be."""
    budget = state.context_window - headroom - context_size([request])
    messages = trim_oldest(state.messages, keep=FRESH_CONTEXT, budget=budget)
    if context_size(messages) > budget:
        raise NodeError(
            f"l2mac: instruction {state.k + 1}'s fresh context alone ({context_size(messages)} tokens) does not fit "
            f"the context window of {state.context_window} tokens; raise context_window or shorten the task"
        )
    return (await context.llm.text([*messages, request], temperature=state.temperature)).strip()


@node(
    "l2mac.summarize_step",
    state=L2macState,
    reads={"messages", "k", "summaries", "turn", "context_window", "temperature"},
    writes={"k", "attempt", "progress", "summaries", "sampling_temperature"},
    config=OverflowConfig,
)
@claimed
async def summarize_step(state: L2macState, config: OverflowConfig, context: RunContext) -> dict[str, Any]:
    """Ask for a one- or two-sentence summary of the completed instruction, for the ones after it; move on."""
    text = await _summary(context, state, agents.complete_message(state.k), config.headroom_tokens)
    project = await load_project(context.store, context.namespace, context.thread_id)
    await project.update_instruction(state.k, status="done", summary=text, turns=state.turn)
    context.log.info("l2mac.step_complete", instruction=state.k, turns=state.turn)
    return {
        "k": state.k + 1,
        "attempt": 0,
        "progress": "",
        "summaries": [*state.summaries, text],
        "sampling_temperature": state.temperature,
    }


@node(
    "l2mac.summarize_overflow",
    state=L2macState,
    reads={"messages", "k", "attempt", "restarts", "context_window", "context_tokens", "temperature", "instructions"},
    writes={"attempt", "progress", "restarts", "sampling_temperature"},
    config=OverflowConfig,
)
@claimed
async def summarize_overflow(state: L2macState, config: OverflowConfig, context: RunContext) -> dict[str, Any]:
    """The context is full: drop the oldest messages, ask for a progress summary, restart the instruction with it."""
    if len(state.messages) <= FRESH_CONTEXT or state.attempt >= config.max_restarts:
        project = await load_project(context.store, context.namespace, context.thread_id)
        if len(state.messages) <= FRESH_CONTEXT:
            reason = (
                f"its fresh context ({state.context_tokens} tokens) leaves no room for a reply in the context window "
                f"of {state.context_window} tokens; raise context_window or shorten the task"
            )
        else:
            reason = f"its context overflowed {state.attempt + 1} times (max_restarts {config.max_restarts})"
        raise await _fail(project, state, reason)
    progress = await _summary(context, state, agents.exhausted_message(state.k), config.headroom_tokens)
    context.log.info("l2mac.overflow_restart", instruction=state.k, attempt=state.attempt + 1)
    return {
        "attempt": state.attempt + 1,
        "restarts": state.restarts + 1,
        "progress": progress,
        "sampling_temperature": state.temperature,
    }


@node("l2mac.finish", state=L2macState, reads=set(), writes={"files", "status"})
@claimed
async def finish(state: L2macState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Mark the project done, list its files and release the thread."""
    project = await load_project(context.store, context.namespace, context.thread_id)
    await project.set_status("done")
    await release_thread(context)
    return {"files": project.paths(), "status": "done"}
