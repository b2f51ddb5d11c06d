"""The README's recipes, run as printed: the Quick start, Deploy with Prefect and Trigger runs from webhooks.

Each is a bash block marked ``<!-- recipe: NAME -->`` in README.md, run line by line in one bash session in the
repository's root (tests/support/readme_recipes.py): the servers it leaves running (Prefect's server and worker,
``mnemoflow serve``) start in the background and are waited for. Everything runs on the offline stand-in, with the
store, the reply cache and Prefect's home in a temporary folder. The Prefect recipe serves on its fixed ports (4200,
8765): the test fails, saying which, when something else holds one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.support.prefect_fixtures import logs, wait_final
from tests.support.prefect_server import REPOSITORY
from tests.support.readme_recipes import RecipeShell, ports_in_use, reader_environment, recipe_lines

pytestmark = [pytest.mark.slow, pytest.mark.subprocess, pytest.mark.prefect, pytest.mark.timeout(900)]

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
NUMBERS = {word: value for value, word in enumerate(NUMBER_WORDS)}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def needs(tool: str) -> None:
    """The recipes call ``tool``: a missing one fails the run in CI and skips the test elsewhere."""
    if shutil.which(tool) is None:
        message = f"the README's recipes need {tool}, which is not on PATH"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


# -- Quick start ----------------------------------------------------------------------------------------------


def test_the_quick_start_and_the_commands_the_demo_prints_run_as_printed(tmp_path: Path) -> None:
    lines = recipe_lines("quick-start")
    assert lines[0].startswith("make demo") and lines[1].startswith("make test"), "the README starts with its two set-up commands"
    assert any(line.startswith("source .venv/bin/activate") for line in lines[2:])
    needs("make")
    # locally, an environment or model build older than its recipe would make `make demo` rebuild it first (minutes)
    current = subprocess.run(["make", "--question", "install", "model"], cwd=REPOSITORY, capture_output=True)
    if current.returncode != 0 and not in_ci():
        pytest.skip("`make demo` would first rebuild .venv or the local model server: run `make install model` once")

    with RecipeShell(REPOSITORY, reader_environment(tmp_path, activated=False), tmp_path) as shell:
        demo = ""
        for line in lines:
            if line.startswith("make test"):  # this test is part of it
                continue
            output = shell.run(line, timeout=600)
            demo = output if line.startswith("make demo") else demo
        questions = re.findall(r"^\d+\. (.+)$", demo, re.MULTILINE)
        commands = re.findall(r"^\s*workspace: (mnemoflow .+?)\s*$", demo, re.MULTILINE)
        assert len(commands) == len(questions) == 3, shell.report()
        # what a reader does next: the commands the demo printed, in the shell the Quick start activated
        for question, command in zip(questions, commands, strict=True):
            shown = shell.run(command, timeout=120)
            assert shown.startswith(question), shell.report()


# -- Deploy with Prefect, then Trigger runs from webhooks --------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_recipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecipeShell]:
    """A shell that has run the Prefect recipe; its server and worker keep running until the module ends."""
    prefect, webhook = recipe_lines("prefect"), recipe_lines("webhook")
    busy = ports_in_use([*prefect, *webhook])
    if busy:
        pytest.fail("the README's recipes serve on fixed ports; " + "; ".join(busy), pytrace=False)
    for tool in ("curl", "openssl"):
        needs(tool)
    home = tmp_path_factory.mktemp("recipes")
    with RecipeShell(REPOSITORY, reader_environment(home, activated=True), home) as shell:
        for line in prefect:
            shell.run(line)
        yield shell


def readme_deployment_count() -> int:
    [count] = [match.group(1) for line in recipe_lines("prefect") if (match := re.search(r"the (\w+) deployments", line))]
    return NUMBERS[count] if count in NUMBERS else int(count)


async def test_deploy_with_prefect_runs_as_printed_and_its_question_completes(prefect_recipe: RecipeShell) -> None:
    with temporary_settings({PREFECT_API_URL: prefect_recipe.variable("PREFECT_API_URL")}):
        async with get_client() as client:
            deployments = await client.read_deployments()
            qa = await client.read_deployment_by_name("run_graph/comorag-qa")
            runs = await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[qa.id])))
        declared = yaml.safe_load((REPOSITORY / "prefect.yaml").read_text())["deployments"]
        assert len(deployments) == len(declared) == readme_deployment_count()

        [asked] = [run for run in runs if "webhook" not in run.tags]  # the webhook test may have asked one too
        assert asked.parameters["input"]["question"] == "Why did Tobin sell the notebook?"
        finished = await wait_final(asked.id, prefect_recipe.services)
        assert finished.state is not None and finished.state.is_completed(), logs(prefect_recipe.services)


async def test_the_webhook_recipe_runs_as_printed_with_only_the_secret_it_uses(prefect_recipe: RecipeShell) -> None:
    lines = recipe_lines("webhook")
    assert not any("SLACK_SIGNING_SECRET" in line or "uuidgen" in line for line in lines)
    for line in lines:
        output = prefect_recipe.run(line)
    assert re.search(r"^HTTP/1\.1 202", output, re.MULTILINE), prefect_recipe.report()
    reply, _ = json.JSONDecoder().raw_decode(output, output.index('{"hook"'))
    assert reply["status"] == "triggered" and reply["hook"] == "ask-from-issue", reply

    [serve] = [service for service in prefect_recipe.services if service.name == "mnemoflow-serve"]
    [warning] = [line for line in serve.output().splitlines() if "hooks.disabled" in line]
    for hook, variable in [
        ("ask-from-slack", "SLACK_SIGNING_SECRET"),
        ("text-stats", "TEXT_STATS_HOOK_SECRET"),
        ("repair-from-issue", "GITHUB_REPAIR_WEBHOOK_SECRET"),
    ]:
        assert f"{hook} ({variable})" in warning
    assert "ask-from-issue" not in warning

    with temporary_settings({PREFECT_API_URL: prefect_recipe.variable("PREFECT_API_URL")}):
        finished = await wait_final(uuid.UUID(reply["flow_run_id"]), prefect_recipe.services)
    assert finished.state is not None and finished.state.is_completed(), logs(prefect_recipe.services)
