"""The hooks file: which signed deliveries start which Prefect deployment, with which parameters.

A hooks file is YAML::

    hooks:
      - name: ask-from-issue                  # [a-z0-9][a-z0-9_-]*, unique in the file; the URL is /hooks/<name>
        provider: github                      # github | slack | generic (see providers.py for the schemes)
        secret_env: GITHUB_WEBHOOK_SECRET     # the NAME of the environment variable holding the secret
        required: true                        # optional; the server refuses to start while the secret is unset
        deployment: run_graph/comorag-qa      # "<flow name>/<deployment name>", as Prefect names it
        events: [issues]                      # optional; github: X-GitHub-Event values, slack: event.type values
        when: "action == 'opened'"            # optional JMESPath over the payload; the delivery is ignored unless truthy
        parameters:                           # flow-run parameter -> JMESPath over the payload
          input: "{book_id: 'the-salt-road', question: issue.title}"

A hook never holds its secret, only the name of the variable that does. A hook whose variable is unset is
disabled (the server starts, warns once naming every such hook, and answers 404 for them as for an unknown hook),
unless it is ``required``: then the server does not start. Every JMESPath expression is compiled
when the file is loaded (function names and argument counts included), so a typo fails ``mnemoflow serve`` at
start, not the first delivery. Every problem of a file is reported at once, each with file, line and column.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import jmespath
from jmespath.exceptions import EmptyExpressionError, IncompleteExpressionError, JMESPathError, LexerError, ParseError
from jmespath.functions import Functions
from jmespath.parser import ParsedResult
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator

from mnemoflow.errors import ConfigError
from mnemoflow.graphs.loader import Positions, Problem, read_yaml, suggest

__all__ = ["HookSecrets", "HookSpec", "HooksFile", "Provider", "compile_expression", "load_hooks", "read_secrets"]

Provider = Literal["github", "slack", "generic"]
"""The signature scheme a hook verifies: GitHub's, Slack's, or mnemoflow's own (``generic``)."""

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEPLOYMENT_PART = re.compile(r"[^/\s](?:[^/]*[^/\s])?")


def _jmespath_problem(expression: str, exc: JMESPathError) -> str:
    if isinstance(exc, EmptyExpressionError):
        return "the expression is empty"
    if isinstance(exc, IncompleteExpressionError):
        return f"`{expression}` is incomplete"
    if isinstance(exc, LexerError):
        return f"`{expression}`: {exc.message} at column {exc.lexer_position + 1}"
    if isinstance(exc, ParseError):
        return f"`{expression}`: unexpected {exc.token_value!r} at column {exc.lex_position + 1}"
    return f"`{expression}`: {exc}"


def _check_functions(node: Mapping[str, Any], expression: str) -> None:
    """JMESPath resolves function names and counts arguments only when it evaluates: do it now."""
    if node.get("type") == "function_expression":
        name, arguments = node["value"], node["children"]
        table = Functions.FUNCTION_TABLE
        if name not in table:
            hint = suggest(name, table)
            raise ValueError(f"`{expression}`: unknown function {name}()" + (f"; {hint}" if hint else ""))
        signature = table[name]["signature"]
        variadic = bool(signature) and bool(signature[-1].get("variadic"))
        if len(arguments) < len(signature) or (not variadic and len(arguments) > len(signature)):
            expected = f"{'at least ' if variadic else ''}{len(signature)}"
            raise ValueError(f"`{expression}`: {name}() takes {expected} argument(s), got {len(arguments)}")
    for child in node.get("children", ()):
        if isinstance(child, Mapping):
            _check_functions(child, expression)


def compile_expression(expression: str) -> ParsedResult:
    """Compile a JMESPath expression and check its functions; ``ValueError`` says what is wrong and where."""
    try:
        compiled = jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(f"invalid JMESPath {_jmespath_problem(expression, exc)}") from None
    _check_functions(compiled.parsed, expression)
    return compiled


def _valid_expression(expression: str) -> str:
    compile_expression(expression)
    return expression


Expression = Annotated[str, AfterValidator(_valid_expression)]


class HookSpec(BaseModel):
    """One hook of a hooks file: a provider's signed deliveries that start a Prefect deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """Unique in the file, ``[a-z0-9][a-z0-9_-]*``; the receiver serves the hook at ``/hooks/<name>``."""
    provider: Provider
    """The signature scheme and payload shape: ``github``, ``slack`` or ``generic``."""
    secret_env: str
    """The name of the environment variable holding the shared secret; never the secret itself."""
    required: bool = False
    """Whether the server refuses to start while ``secret_env`` is unset; otherwise the hook is disabled."""
    deployment: str
    """``<flow name>/<deployment name>`` as Prefect names it, e.g. ``run_graph/comorag-qa``."""
    events: tuple[str, ...] | None = Field(default=None, min_length=1)
    """Accepted events (github: ``X-GitHub-Event``; slack: ``event.type``); others are ignored. Not for generic."""
    when: Expression | None = None
    """A JMESPath condition over the payload; a delivery is ignored unless its result is truthy."""
    parameters: dict[str, Expression] = Field(default_factory=dict)
    """Flow-run parameter name -> JMESPath expression over the payload giving its value."""

    _when: ParsedResult | None = PrivateAttr(default=None)
    _parameters: dict[str, ParsedResult] = PrivateAttr(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value) or len(value) > 64:
            raise ValueError("a hook name is 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit")
        return value

    @field_validator("secret_env")
    @classmethod
    def _check_secret_env(cls, value: str) -> str:
        # the value is never echoed: a secret pasted here by mistake must not reach a log
        if not _ENV_NAME.fullmatch(value):
            raise ValueError("secret_env is the NAME of an environment variable (letters, digits and '_'), not the secret")
        return value

    @field_validator("deployment")
    @classmethod
    def _check_deployment(cls, value: str) -> str:
        parts = value.split("/")
        if len(parts) != 2 or not all(_DEPLOYMENT_PART.fullmatch(part) for part in parts):
            raise ValueError(f"{value!r} is not '<flow name>/<deployment name>', e.g. 'run_graph/comorag-qa'")
        return value

    @field_validator("events")
    @classmethod
    def _check_events(cls, value: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...] | None:
        if value is None:
            return value
        if info.data.get("provider") == "generic":
            raise ValueError("generic hooks have no event types: drop events, or filter with when")
        if any(not event.strip() for event in value):
            raise ValueError("an event name is empty")
        return value

    @field_validator("parameters")
    @classmethod
    def _check_parameter_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not _PARAMETER.fullmatch(name)]
        if bad:
            raise ValueError(f"parameter names are Python identifiers (flow arguments); not {', '.join(map(repr, bad))}")
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._when = compile_expression(self.when) if self.when is not None else None
        self._parameters = {name: compile_expression(expression) for name, expression in self.parameters.items()}

    @property
    def when_expression(self) -> ParsedResult | None:
        """``when``, compiled."""
        return self._when

    @property
    def parameter_expressions(self) -> Mapping[str, ParsedResult]:
        """``parameters``, compiled, in file order."""
        return MappingProxyType(self._parameters)


class HooksFile(BaseModel):
    """A whole hooks file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hooks: list[HookSpec] = Field(default_factory=list)


def _hook_label(item: Any, index: int) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"hook {name!r}" if isinstance(name, str) and name else f"hooks[{index}]"


def _schema_problems(exc: ValidationError, item: Any, index: int, positions: Positions) -> list[Problem]:
    label = _hook_label(item, index)
    fields = HookSpec.model_fields
    problems = []
    for error in exc.errors():
        location = tuple(error["loc"])
        where = ".".join(str(part) for part in location if part != "[key]")
        message, hint = error["msg"].removeprefix("Value error, "), ""
        if error["type"] == "extra_forbidden":
            message = f"unknown key {where!r}"
            hint = suggest(str(location[-1]), fields) or f"a hook's keys are {', '.join(fields)}"
        elif error["type"] == "missing":
            message = f"missing required key {where!r}"
        else:
            message = f"{where}: {message}"
            if location[:1] in (("parameters",), ("when",)) and isinstance(error.get("input"), dict | list):
                hint = "quote an expression that starts with '{' or '[': YAML reads it as a mapping or a list"
            elif isinstance(error.get("input"), bool):
                hint = "YAML reads yes/no/on/off/true/false as booleans: quote the word"
        problems.append(positions.problem(("hooks", index, *location), f"invalid-{error['type']}", f"{label}: {message}", hint))
    return problems


def load_hooks(path: str | os.PathLike[str]) -> dict[str, HookSpec]:
    """Read a hooks file into its hooks by name (in file order).

    Raises:
        ConfigError: the file cannot be read, is not YAML, or has hooks that are invalid: unknown or missing
            keys, an inline secret, a duplicate name, a JMESPath expression that does not compile, ``events`` on
            a generic hook. The message lists every problem as ``file:line:column: code: hook 'name': what``.
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(Problem(file, 1, 1, "unreadable", f"cannot read the hooks file: {exc}"))) from exc
    data, positions, problems = read_yaml(text, file, holds="hooks", hint="start it with 'hooks:'")
    hooks: dict[str, HookSpec] = {}
    if data is not None:
        problems += _check_file(data, positions, hooks)
    if problems:
        problems.sort(key=lambda problem: (problem.line, problem.column))
        raise ConfigError("\n".join(str(problem) for problem in problems))
    return hooks


def _check_file(data: Any, positions: Positions, hooks: dict[str, HookSpec]) -> list[Problem]:
    if not isinstance(data, dict):
        return [positions.problem((), "not-a-mapping", "a hooks file is a mapping with one key, 'hooks'")]
    problems = [
        positions.problem((key,), "unknown-key", f"unknown top-level key {key!r}", suggest(str(key), ["hooks"]))
        for key in data
        if key != "hooks"
    ]
    if "hooks" not in data:
        return [*problems, positions.problem((), "missing-key", "a hooks file starts with 'hooks:', a list of hooks")]
    items = data["hooks"]
    if items is None:  # `hooks:` with nothing under it: no hooks
        return problems
    if not isinstance(items, list):
        return [*problems, positions.problem(("hooks",), "not-a-list", "hooks: a list of hooks, each a mapping")]
    first_at: dict[str, int] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(positions.problem(("hooks", index), "not-a-mapping", f"hooks[{index}]: a hook is a mapping of keys"))
            continue
        if "secret" in item:  # refused by name, and the value never copied into a message
            item = {key: value for key, value in item.items() if key != "secret"}
            problems.append(
                positions.problem(
                    ("hooks", index, "secret"),
                    "inline-secret",
                    f"{_hook_label(item, index)}: a hooks file never holds a secret",
                    "put it in an environment variable and name that variable in secret_env",
                )
            )
        try:
            spec = HookSpec.model_validate(item)
        except ValidationError as exc:
            problems += _schema_problems(exc, item, index, positions)
            continue
        if spec.name in first_at:
            line, _ = positions.at(("hooks", first_at[spec.name]))
            problems.append(
                positions.problem(
                    ("hooks", index, "name"), "duplicate-name", f"hook {spec.name!r}: the name is already used on line {line}"
                )
            )
            continue
        first_at[spec.name] = index
        hooks[spec.name] = spec
    return problems


def _secret(hook: HookSpec, environ: Mapping[str, str]) -> bytes | None:
    value = environ.get(hook.secret_env)
    if not value or not value.strip():
        return None
    return value.encode("utf-8", "surrogateescape")  # os.environ's undecodable bytes come back as they were


def _listed(hooks: Mapping[str, str]) -> str:
    return ", ".join(f"{name} ({variable})" for name, variable in hooks.items())


@dataclass(frozen=True)
class HookSecrets:
    """The secrets of a hooks file's enabled hooks, and the hooks left disabled because their secret is unset."""

    secrets: Mapping[str, bytes]
    """Each enabled hook's secret, by hook name, in file order."""
    disabled: Mapping[str, str]
    """Each disabled hook's ``secret_env``, by hook name, in file order."""

    def warning(self) -> str | None:
        """One line naming every disabled hook and its variable, or ``None`` when every hook is enabled."""
        if not self.disabled:
            return None
        line = f"hooks disabled, their secret is not set: {_listed(self.disabled)}"
        if not self.secrets:
            line += "; no hook is enabled: the UI is served, and every /hooks/ URL answers 404"
        return line + ". Set their variables and restart the server to enable them."


def read_secrets(hooks: Mapping[str, HookSpec], environ: Mapping[str, str]) -> HookSecrets:
    """Each hook's secret from ``environ`` (usually ``os.environ``); a hook whose variable is unset or empty is
    disabled, unless it is ``required``.

    Raises:
        ConfigError: hooks marked ``required: true`` have no secret; the message names every one of them and
            its variable.
    """
    secrets: dict[str, bytes] = {}
    disabled: dict[str, str] = {}
    for name, hook in hooks.items():
        secret = _secret(hook, environ)
        if secret is None:
            disabled[name] = hook.secret_env
        else:
            secrets[name] = secret
    missing = {name: variable for name, variable in disabled.items() if hooks[name].required}
    if missing:
        raise ConfigError(
            f"hooks marked required have no secret: {_listed(missing)}; set the environment variables, "
            "or drop `required: true` to start with those hooks disabled"
        )
    return HookSecrets(MappingProxyType(secrets), MappingProxyType(disabled))
