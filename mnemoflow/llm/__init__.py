"""The LLM gateway: one OpenAI-compatible client for OpenAI, vLLM, Ollama and the test server."""

from mnemoflow.llm.backends import ChatRequest, Completion, OfflineBackend, OpenAIBackend, offline_handler
from mnemoflow.llm.cache import ResponseCache
from mnemoflow.llm.gateway import LLM, RequestSlot, llm_from_settings, uses_offline_model
from mnemoflow.llm.parsing import extract_json
from mnemoflow.llm.usage import Usage

__all__ = [
    "LLM",
    "ChatRequest",
    "Completion",
    "OfflineBackend",
    "OpenAIBackend",
    "RequestSlot",
    "ResponseCache",
    "Usage",
    "extract_json",
    "llm_from_settings",
    "offline_handler",
    "uses_offline_model",
]
