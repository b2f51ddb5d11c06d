"""Hooks whose secret is not set: disabled with one warning naming them all, unless the hooks file marks them
required, in which case ``mnemoflow serve`` refuses to start naming every one at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from mnemoflow.errors import ConfigError
from mnemoflow.flows.server.app import create_app
from mnemoflow.flows.server.hooks import load_hooks, read_secrets, sign_generic
from mnemoflow.settings import HooksSettings, Settings, StoreSettings
from tests.support.web_server import free_port, serve, wait_until_serving

EXAMPLE = Path(__file__).resolve().parents[1] / "flows" / "server" / "hooks.example.yaml"
MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))
VARIABLES = ("TEST_HOOK_ASK_SECRET", "TEST_HOOK_CHAT_SECRET", "TEST_HOOK_STATS_SECRET", "TEST_HOOK_REPAIR_SECRET")

HOOKS_YAML = """
hooks:
  - name: ask
    provider: github
    secret_env: TEST_HOOK_ASK_SECRET
    deployment: run_graph/comorag-qa
  - name: chat
    provider: slack
    secret_env: TEST_HOOK_CHAT_SECRET
    deployment: run_graph/comorag-qa
  - name: stats
    provider: generic
    secret_env: TEST_HOOK_STATS_SECRET
    deployment: run_graph/text-stats
  - name: repair
    provider: github
    secret_env: TEST_HOOK_REPAIR_SECRET
    deployment: run_graph/experepair
"""


def hooks_file(tmp_path: Path, *, required: tuple[str, ...] = ()) -> Path:
    """The four hooks above, with ``required: true`` on those named."""
    text = HOOKS_YAML
    for name in required:
        text = text.replace(f"  - name: {name}\n", f"  - name: {name}\n    required: true\n")
    path = tmp_path / "hooks.yaml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)


# -- reading the secrets -----------------------------------------------------------------------------------------


def test_hooks_whose_secret_is_unset_are_disabled_and_named_with_their_variable_in_one_line(tmp_path: Path) -> None:
    hooks = load_hooks(hooks_file(tmp_path))
    read = read_secrets(hooks, {"TEST_HOOK_ASK_SECRET": "s3cr3t", "TEST_HOOK_STATS_SECRET": "   "})
    assert dict(read.secrets) == {"ask": b"s3cr3t"}
    assert list(read.disabled.items()) == [  # file order; a blank value is no secret
        ("chat", "TEST_HOOK_CHAT_SECRET"),
        ("stats", "TEST_HOOK_STATS_SECRET"),
        ("repair", "TEST_HOOK_REPAIR_SECRET"),
    ]
    assert read.warning() == (
        "hooks disabled, their secret is not set: chat (TEST_HOOK_CHAT_SECRET), stats (TEST_HOOK_STATS_SECRET), "
        "repair (TEST_HOOK_REPAIR_SECRET). Set their variables and restart the server to enable them."
    )


def test_with_every_secret_set_nothing_is_disabled_and_nothing_warned(tmp_path: Path) -> None:
    hooks = load_hooks(hooks_file(tmp_path, required=("ask",)))
    read = read_secrets(hooks, {variable: f"secret-{variable}" for variable in VARIABLES})
    assert list(read.secrets) == ["ask", "chat", "stats", "repair"] and not read.disabled
    assert read.warning() is None


def test_with_no_secret_at_all_the_warning_says_no_hook_is_enabled(tmp_path: Path) -> None:
    read = read_secrets(load_hooks(hooks_file(tmp_path)), {})
    assert not read.secrets and list(read.disabled) == ["ask", "chat", "stats", "repair"]
    warning = read.warning()
    assert warning is not None and "no hook is enabled" in warning and "ask (TEST_HOOK_ASK_SECRET)" in warning


def test_required_hooks_without_their_secret_are_refused_all_at_once(tmp_path: Path) -> None:
    hooks = load_hooks(hooks_file(tmp_path, required=("ask", "stats", "repair")))
    assert [hook.required for hook in hooks.values()] == [True, False, True, True]
    with pytest.raises(ConfigError) as refused:
        read_secrets(hooks, {"TEST_HOOK_REPAIR_SECRET": "set"})
    message = str(refused.value)
    assert message.startswith(
        "hooks marked required have no secret: ask (TEST_HOOK_ASK_SECRET), stats (TEST_HOOK_STATS_SECRET); "
    )
    assert "chat" not in message and "repair" not in message  # optional, or set
    assert "required: true" in message  # what to drop to start without them


def test_required_is_a_boolean_checked_with_the_rest_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hooks.yaml"
    path.write_text(HOOKS_YAML.replace("  - name: chat\n", "  - name: chat\n    required: sometimes\n"))
    with pytest.raises(ConfigError) as refused:
        load_hooks(path)
    assert ":8:" in str(refused.value) and "hook 'chat': required" in str(refused.value)


def test_the_example_file_needs_only_the_secret_of_the_hook_in_use() -> None:
    hooks = load_hooks(EXAMPLE)
    assert not [name for name, hook in hooks.items() if hook.required]
    read = read_secrets(hooks, {"GITHUB_WEBHOOK_SECRET": "s3cr3t"})
    assert list(read.secrets) == ["ask-from-issue"]
    assert dict(read.disabled) == {
        "ask-from-slack": "SLACK_SIGNING_SECRET",
        "text-stats": "TEXT_STATS_HOOK_SECRET",
        "repair-from-issue": "GITHUB_REPAIR_WEBHOOK_SECRET",
    }


# -- the server ------------------------------------------------------------------------------------------------


def settings_for(tmp_path: Path, hooks: Path) -> Settings:
    return Settings(
        store=StoreSettings(backend="sqlite", sqlite_path=tmp_path / "memory.db"),
        hooks=HooksSettings(file=hooks, max_body_bytes=64 * 1024),
    )


def test_a_disabled_hook_answers_as_an_unknown_one_and_the_start_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_HOOK_STATS_SECRET", "stats-secret")
    with capture_logs() as logs, serve(create_app(settings_for(tmp_path, hooks_file(tmp_path)))) as url:
        body = b'{"text": "Memory that lasts."}'
        wrong = sign_generic(b"not-the-secret", body, int(time.time()), delivery="d-1")
        enabled = httpx.post(f"{url}/hooks/stats", content=body, headers=wrong)
        disabled = httpx.post(f"{url}/hooks/chat", content=body, headers=wrong)
        unknown = httpx.post(f"{url}/hooks/chatt", content=body, headers=wrong)
    assert enabled.status_code == 401  # served: its signature is checked
    assert disabled.status_code == unknown.status_code == 404
    assert disabled.json() == {"hook": "chat", "error": "unknown hook"}
    assert unknown.json() == {"hook": "chatt", "error": "unknown hook"}
    [warning] = [entry for entry in logs if entry["event"] == "hooks.disabled"]
    assert warning["log_level"] == "warning"
    assert warning["secret_env"] == {"ask": "TEST_HOOK_ASK_SECRET", "chat": "TEST_HOOK_CHAT_SECRET", "repair": "TEST_HOOK_REPAIR_SECRET"}
    assert "ask (TEST_HOOK_ASK_SECRET), chat (TEST_HOOK_CHAT_SECRET), repair (TEST_HOOK_REPAIR_SECRET)" in warning["message"]
    assert "no hook is enabled" not in warning["message"]


def test_with_no_hook_enabled_the_server_still_serves_its_pages(tmp_path: Path) -> None:
    with capture_logs() as logs, serve(create_app(settings_for(tmp_path, hooks_file(tmp_path)))) as url:
        page = httpx.get(f"{url}/graphs")
        hook = httpx.post(f"{url}/hooks/ask", content=b"{}", headers={"Content-Type": "application/json"})
    assert page.status_code == 200 and hook.status_code == 404
    [warning] = [entry for entry in logs if entry["event"] == "hooks.disabled"]
    assert "no hook is enabled" in warning["message"]


# -- `mnemoflow serve`, as a user starts it ----------------------------------------------------------------------


def serve_environment(tmp_path: Path, hooks: Path, **secrets: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MNEMOFLOW_") and key not in VARIABLES}
    environment.update(MNEMOFLOW_STORE_SQLITE_PATH=str(tmp_path / "memory.db"), MNEMOFLOW_HOOKS_FILE=str(hooks), **secrets)
    return environment


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``mnemoflow serve`` with the four hooks and only the ask hook's secret; its process and base URL."""
    port = free_port()
    process = subprocess.Popen(
        [MNEMOFLOW, "serve", "--port", str(port)],
        env=serve_environment(tmp_path, hooks_file(tmp_path), TEST_HOOK_ASK_SECRET="ask-secret"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, lambda: process.communicate(timeout=10))
        yield process, url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.subprocess
@pytest.mark.slow
def test_serve_starts_without_the_secrets_of_unused_hooks_and_warns_once_on_stderr(
    started: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = started
    assert httpx.post(f"{url}/hooks/repair", content=b"{}").status_code == 404
    process.terminate()
    _, stderr = process.communicate(timeout=30)
    [warning] = [line for line in stderr.splitlines() if "hooks.disabled" in line]
    assert "hooks disabled, their secret is not set: chat (TEST_HOOK_CHAT_SECRET), stats (TEST_HOOK_STATS_SECRET)" in warning
    assert "repair (TEST_HOOK_REPAIR_SECRET)" in warning and "ask (" not in warning


@pytest.mark.subprocess
@pytest.mark.slow
def test_serve_refuses_to_start_naming_every_required_hook_without_its_secret(tmp_path: Path) -> None:
    done = subprocess.run(
        [MNEMOFLOW, "serve", "--port", str(free_port())],
        env=serve_environment(tmp_path, hooks_file(tmp_path, required=("ask", "chat", "repair")), TEST_HOOK_CHAT_SECRET="set"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert (
        "error: hooks marked required have no secret: ask (TEST_HOOK_ASK_SECRET), repair (TEST_HOOK_REPAIR_SECRET)"
        in done.stderr
    )
    assert "Traceback" not in done.stderr
