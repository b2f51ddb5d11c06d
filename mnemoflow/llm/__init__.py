"""The LLM gateway: one OpenAI-compatible client for OpenAI, vLLM, Ollama and the test server (text, JSON, tools)."""

from mnemoflow.llm.backends import ChatRequest, Completion, OfflineBackend, OpenAIBackend, offline_handler, offline_tool_handler
from mnemoflow.llm.cache import ResponseCache
from mnemoflow.llm.calls import CallRecord
from mnemoflow.llm.factory import llm_from_settings, uses_offline_model
from mnemoflow.llm.gateway import LLM, RequestSlot
from mnemoflow.llm.parsing import extract_json
from mnemoflow.llm.tools import Tool, ToolArgumentError, ToolCall, ToolTurn, tool_result
from mnemoflow.llm.usage import Usage

__all__ = [
    "LLM",
    "CallRecord",
    "ChatRequest",
    "Completion",
    "OfflineBackend",
    "OpenAIBackend",
    "RequestSlot",
    "ResponseCache",
    "Tool",
    "ToolArgumentError",
    "ToolCall",
    "ToolTurn",
    "Usage",
    "extract_json",
    "llm_from_settings",
    "offline_handler",
    "offline_tool_handler",
    "tool_result",
    "uses_offline_model",
]
