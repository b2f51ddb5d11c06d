"""Settings from the environment, logging set-up, the exception tree and the public API of each layer."""

from __future__ import annotations

import importlib
import io
import json
import logging
import pkgutil
from types import ModuleType

import pytest
import structlog
from pydantic import BaseModel, ValidationError

import mnemoflow.errors as errors
from mnemoflow.logging import bind_run_context, configure_logging, get_logger
from mnemoflow.settings import LogSettings, Settings


def test_settings_read_standard_and_prefixed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEO4J_URI", "bolt://db.internal:7688")
    monkeypatch.setenv("NEO4J_PASSWORD", "s3cret-password")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("MNEMOFLOW_STORE_BACKEND", "neo4j")
    monkeypatch.setenv("MNEMOFLOW_EMBEDDING_DIMENSION", "256")
    monkeypatch.setenv("MNEMOFLOW_NAMESPACE", "team-a")
    settings = Settings()
    assert settings.neo4j.uri == "bolt://db.internal:7688"
    assert settings.neo4j.password is not None and settings.neo4j.password.get_secret_value() == "s3cret-password"
    assert "s3cret" not in settings.model_dump_json()
    assert settings.openai.base_url == "http://127.0.0.1:8000/v1"
    assert (settings.store.backend, settings.embedding.dimension, settings.namespace) == ("neo4j", 256, "team-a")


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNEMOFLOW_STORE_BACKEND", "postgres")
    with pytest.raises(ValidationError, match="backend"):
        Settings()
    monkeypatch.delenv("MNEMOFLOW_STORE_BACKEND")
    monkeypatch.setenv("MNEMOFLOW_EMBEDDING_DIMENSION", "3")
    with pytest.raises(ValidationError, match="dimension"):
        Settings()
    monkeypatch.delenv("MNEMOFLOW_EMBEDDING_DIMENSION")
    for bad in ("-1", "101", "many"):  # a cap on reschedules: 0 to 100 times
        monkeypatch.setenv("MNEMOFLOW_PREFECT_MAX_RESCHEDULES", bad)
        with pytest.raises(ValidationError, match="max_reschedules"):
            Settings()


def test_every_setting_is_described() -> None:
    settings = Settings()
    for group, top in Settings.model_fields.items():
        value = getattr(settings, group)
        if not isinstance(value, BaseModel):
            assert top.description, f"Settings.{group} has no description"
            continue
        for name, field in type(value).model_fields.items():
            assert field.description, f"{type(value).__name__}.{name} has no description"


def test_json_logs_carry_run_context() -> None:
    stream = io.StringIO()
    configure_logging(LogSettings(format="json"), stream=stream, force=True)
    try:
        with bind_run_context(namespace="team-a", run_id="r1", node="comorag.try_answer"):
            get_logger("test").info("step.done", calls=3)
        get_logger("test").info("outside")
        first, second = (json.loads(line) for line in stream.getvalue().splitlines())
        assert first["event"] == "step.done" and first["calls"] == 3
        assert (first["namespace"], first["run_id"], first["node"]) == ("team-a", "r1", "comorag.try_answer")
        assert "namespace" not in second
    finally:
        structlog.reset_defaults()
        configure_logging(LogSettings(), force=True)


def test_console_logs_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    configure_logging(LogSettings(format="auto"), stream=stream, force=True)
    try:
        with bind_run_context(namespace="ns"):
            get_logger().warning("visible")
        output = stream.getvalue()
        assert "visible" in output and "namespace" in output and not output.lstrip().startswith("{")
        assert logging.getLogger().level == logging.WARNING
    finally:
        configure_logging(LogSettings(), force=True)


def test_exception_tree() -> None:
    for name in errors.__all__:
        error = getattr(errors, name)
        assert issubclass(error, errors.MnemoflowError), name
        assert error.__doc__, name
    assert issubclass(errors.StoreUnavailableError, ConnectionError)
    assert issubclass(errors.InvalidNameError, ValueError)
    assert issubclass(errors.MissingEndpointError, LookupError)


def _every_module() -> list[ModuleType]:
    """Every module of the package, imported (the layers' folders are walked through their installed names)."""
    modules = []
    for package in ("mnemoflow", "mnemoflow.memory", "mnemoflow.nodes", "mnemoflow.graphs", "mnemoflow.flows", "mnemoflow.evaluation"):
        face = importlib.import_module(package)
        modules.append(face)
        for found in pkgutil.walk_packages(face.__path__, prefix=f"{package}."):
            modules.append(importlib.import_module(found.name))
    return modules


def test_every_error_the_package_defines_is_in_the_tree_with_a_code_and_drawn() -> None:
    classes = {
        value
        for module in _every_module()
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == module.__name__
    }
    public = {error for error in classes if not error.__name__.startswith("_")}
    assert {error.__qualname__ for error in public if not issubclass(error, errors.MnemoflowError)} == set()
    codes = [error.code for error in public]
    assert all("code" in vars(error) and error.code for error in public), [e.__name__ for e in public if "code" not in vars(e)]
    assert len(set(codes)) == len(codes), sorted(code for code in codes if codes.count(code) > 1)
    for error in public:
        assert error.code in _drawn(error.__name__), f"{error.__name__} ({error.code}) is not drawn in errors.py"


def _drawn(name: str) -> list[str]:
    """The words of the line of errors.py's drawing that names ``name``: its bases, code and meaning."""
    for line in (errors.__doc__ or "").splitlines():
        words = line.replace("├──", " ").replace("└──", " ").replace("│", " ").split()
        if words and words[0] == name:
            return words
    return []


@pytest.mark.parametrize(
    "package",
    ["mnemoflow", "mnemoflow.llm", "mnemoflow.memory", "mnemoflow.nodes", "mnemoflow.graphs", "mnemoflow.flows", "mnemoflow.evaluation"],
)
def test_package_exports_exactly_its_all(package: str) -> None:
    module = importlib.import_module(package)
    assert len(set(module.__all__)) == len(module.__all__), f"{package}.__all__ has duplicates"
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.__all__ names {name}, which does not exist"
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, type(importlib)) and name != "annotations"
    }
    assert public <= set(module.__all__), f"{package} exposes names missing from __all__: {sorted(public - set(module.__all__))}"
