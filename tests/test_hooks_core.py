"""The pure core of webhook receiving: the hooks file, the providers' signature schemes, payload to parameters."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemoflow.errors import ConfigError
from mnemoflow.flows.server.hooks import (
    Delivery,
    HookRejected,
    HookSpec,
    accepts,
    load_hooks,
    map_parameters,
    read_secrets,
    sign_generic,
    sign_github,
    sign_slack,
    verify,
)

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
EXAMPLE = Path(__file__).resolve().parents[1] / "flows" / "server" / "hooks.example.yaml"
SECRET = b"It's a Secret to Everybody"
WRONG = b"It's a secret to nobody"
NOW = 1_772_815_509.0


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture(name: str) -> Any:
    return json.loads(fixture_bytes(name))


def rejected(status: int, provider: str, headers: dict[str, str], body: bytes, secret: bytes = SECRET, now: float = NOW) -> str:
    with pytest.raises(HookRejected) as info:
        verify(provider, headers, body, secret, now=now)
    assert info.value.status == status, info.value.reason
    assert str(info.value) == info.value.reason
    return info.value.reason


def signed(provider: str, body: bytes, secret: bytes = SECRET, timestamp: int = int(NOW)) -> dict[str, str]:
    if provider == "github":
        return sign_github(secret, body, "issues", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
    if provider == "slack":
        return sign_slack(secret, body, timestamp)
    return sign_generic(secret, body, timestamp, delivery="order-1234")


# --- providers: what every scheme shares ----------------------------------------------------------------------

PROVIDERS = ["github", "slack", "generic"]
BODIES = {"github": "github_issues_opened.json", "slack": "slack_app_mention.json", "generic": "github_push.json"}
SIGNATURE_HEADER = {"github": "X-Hub-Signature-256", "slack": "X-Slack-Signature", "generic": "X-Mnemoflow-Signature"}
TIMESTAMP_HEADER = {"slack": "X-Slack-Request-Timestamp", "generic": "X-Mnemoflow-Timestamp"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_valid_delivery_verifies(provider: str) -> None:
    body = fixture_bytes(BODIES[provider])
    delivery = verify(provider, signed(provider, body), body, SECRET, now=NOW)
    assert delivery.payload == json.loads(body)
    assert delivery.challenge is None
    expected = {
        "github": ("72d3162e-cc78-11e3-81ab-4c9367dc0958", "issues"),
        "slack": ("Ev0LAN670R", "app_mention"),
        "generic": ("order-1234", None),
    }[provider]
    assert (delivery.delivery_id, delivery.event) == expected


@pytest.mark.parametrize("provider", PROVIDERS)
def test_headers_are_case_insensitive_and_charset_is_ignored(provider: str) -> None:
    body = fixture_bytes(BODIES[provider])
    headers = {name.upper(): value for name, value in signed(provider, body).items()}
    headers["CONTENT-TYPE"] = "Application/JSON; charset=utf-8"
    assert verify(provider, headers, body, SECRET, now=NOW).payload == json.loads(body)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_tampered_body_is_refused(provider: str) -> None:
    body = fixture_bytes(BODIES[provider])
    headers = signed(provider, body)
    tampered = body.replace(b"Tobin", b"Tobyn") if b"Tobin" in body else body.replace(b"main", b"mayn")
    assert tampered != body
    assert "does not match" in rejected(401, provider, headers, tampered)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_wrong_secret_is_refused(provider: str) -> None:
    body = fixture_bytes(BODIES[provider])
    reason = rejected(401, provider, signed(provider, body, secret=WRONG), body)
    assert "wrong secret" in reason
    assert SECRET.decode() not in reason and WRONG.decode() not in reason


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_missing_signature_header_is_refused(provider: str) -> None:
    body = fixture_bytes(BODIES[provider])
    headers = signed(provider, body)
    del headers[SIGNATURE_HEADER[provider]]
    assert SIGNATURE_HEADER[provider] in rejected(401, provider, headers, body)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_signature_without_its_prefix_is_refused(provider: str) -> None:
    body = fixture_bytes(BODIES[provider])
    headers = signed(provider, body)
    headers[SIGNATURE_HEADER[provider]] = headers[SIGNATURE_HEADER[provider]].split("=", 1)[1]
    assert "does not start with" in rejected(401, provider, headers, body)


@pytest.mark.parametrize("provider", ["slack", "generic"])
def test_a_stale_timestamp_is_refused_even_when_signed(provider: str) -> None:
    body = fixture_bytes(BODIES[provider])
    headers = signed(provider, body, timestamp=int(NOW) - 301)
    assert "stale" in rejected(401, provider, headers, body)
    assert verify(provider, signed(provider, body, timestamp=int(NOW) - 299), body, SECRET, now=NOW)


@pytest.mark.parametrize("provider", ["slack", "generic"])
def test_a_future_timestamp_is_refused(provider: str) -> None:
    body = fixture_bytes(BODIES[provider])
    assert "future" in rejected(401, provider, signed(provider, body, timestamp=int(NOW) + 301), body)
    assert verify(provider, signed(provider, body, timestamp=int(NOW) + 299), body, SECRET, now=NOW)


@pytest.mark.parametrize("provider", ["slack", "generic"])
@pytest.mark.parametrize("timestamp", ["", "soon", "1772815509.5", "-1772815509", "+1772815509", "1_772_815_509", "١٧٧٢٨١٥٥٠٩"])
def test_a_non_numeric_timestamp_is_refused(provider: str, timestamp: str) -> None:
    body = fixture_bytes(BODIES[provider])
    headers = signed(provider, body)
    headers[TIMESTAMP_HEADER[provider]] = timestamp
    rejected(401, provider, headers, body)


@pytest.mark.parametrize("provider", ["slack", "generic"])
def test_a_missing_timestamp_is_refused(provider: str) -> None:
    body = fixture_bytes(BODIES[provider])
    headers = signed(provider, body)
    del headers[TIMESTAMP_HEADER[provider]]
    assert TIMESTAMP_HEADER[provider] in rejected(401, provider, headers, body)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_a_wrong_content_type_is_refused_before_the_signature(provider: str, content_type: str | None) -> None:
    body = fixture_bytes(BODIES[provider])
    headers = signed(provider, body, secret=WRONG)  # the content type is checked first
    del headers["Content-Type"]
    if content_type is not None:
        headers["Content-Type"] = content_type
    rejected(415, provider, headers, body)


def test_slack_refuses_form_bodies_naming_the_events_api() -> None:
    body = b"payload=%7B%7D"
    headers = {**sign_slack(SECRET, body, int(NOW)), "Content-Type": "application/x-www-form-urlencoded"}
    assert "Events API" in rejected(415, "slack", headers, body)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b"", b'{"a": NaN}', b"\xff\xfe{", b"[" * 100_000])
def test_a_bad_body_with_a_valid_signature_is_422(provider: str, body: bytes) -> None:
    rejected(422, provider, signed(provider, body), body)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_bad_body_with_a_bad_signature_is_401(provider: str) -> None:
    rejected(401, provider, signed(provider, b"{}", secret=WRONG), b"{not json")


def test_an_oversized_body_is_413() -> None:
    body = fixture_bytes("github_push.json")
    with pytest.raises(HookRejected) as info:
        verify("github", signed("github", body), body, SECRET, now=NOW, max_body_bytes=len(body) - 1)
    assert info.value.status == 413
    assert verify("github", signed("github", body), body, SECRET, now=NOW, max_body_bytes=len(body))


def test_an_unknown_provider_or_empty_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown webhook provider"):
        verify("gitlab", {}, b"{}", SECRET, now=NOW)
    with pytest.raises(ValueError, match="secret"):
        verify("github", signed("github", b"{}"), b"{}", b"", now=NOW)


# --- providers: each scheme's own rules ----------------------------------------------------------------------


def test_github_form_mode_carries_the_json_in_payload() -> None:
    payload = fixture("github_issues_opened.json")
    body = ("payload=" + quote(json.dumps(payload), safe="")).encode()
    headers = sign_github(SECRET, body, "issues", "d1", content_type="application/x-www-form-urlencoded")
    delivery = verify("github", headers, body, SECRET, now=NOW)
    assert delivery.payload == payload and delivery.event == "issues"
    rejected(
        422, "github", headers | sign_github(SECRET, b"other=1", "issues", "d1", content_type=headers["Content-Type"]), b"other=1"
    )
    bad = b"payload=" + quote("{nope").encode()
    rejected(422, "github", sign_github(SECRET, bad, "issues", "d1", content_type=headers["Content-Type"]), bad)


def test_github_ping_is_a_delivery() -> None:
    body = json.dumps({"zen": "Design for failure.", "hook_id": 109948940, "hook": {"type": "Repository"}}).encode()
    delivery = verify("github", sign_github(SECRET, body, "ping", "p1"), body, SECRET, now=NOW)
    assert delivery.event == "ping"


@pytest.mark.parametrize("header", ["X-GitHub-Event", "X-GitHub-Delivery"])
def test_github_needs_event_and_delivery_headers_after_the_signature(header: str) -> None:
    body = fixture_bytes("github_push.json")
    headers = signed("github", body)
    del headers[header]
    assert header in rejected(422, "github", headers, body)
    wrong = signed("github", body, secret=WRONG)
    del wrong[header]
    rejected(401, "github", wrong, body)  # nothing about the body is said before its signature is good


@pytest.mark.parametrize("delivery", ["x" * 201, "line\nbreak", "tab\there", "   "])
def test_delivery_ids_are_bounded_and_printable(delivery: str) -> None:
    body = b'{"text": "hi"}'
    blank_means_missing = 401 if not delivery.strip() else 422  # the generic key is a signed header
    rejected(blank_means_missing, "generic", sign_generic(SECRET, body, int(NOW), delivery=delivery), body)
    rejected(422, "github", sign_github(SECRET, body, "push", delivery), body)


def test_a_generic_request_resent_under_another_key_is_refused() -> None:
    body = b'{"text": "hi"}'
    headers = sign_generic(SECRET, body, int(NOW), delivery="first")
    assert verify("generic", headers, body, SECRET, now=NOW).delivery_id == "first"
    assert "X-Mnemoflow-Signature" in rejected(401, "generic", {**headers, "X-Mnemoflow-Delivery": "second"}, body)


def test_generic_accepts_a_200_character_key() -> None:
    body = b'{"text": "hi"}'
    delivery = verify("generic", sign_generic(SECRET, body, int(NOW), delivery="k" * 200), body, SECRET, now=NOW)
    assert delivery.delivery_id == "k" * 200
    assert len(sign_generic(SECRET, body, int(NOW))["X-Mnemoflow-Delivery"]) == 32  # a fresh key by default


def test_slack_url_verification_gives_the_challenge() -> None:
    body = json.dumps(
        {
            "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    ).encode()
    delivery = verify("slack", sign_slack(SECRET, body, int(NOW)), body, SECRET, now=NOW)
    assert delivery.challenge == "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    assert delivery.delivery_id == "url_verification:" + delivery.challenge
    # a challenge is only answered once its signature is good
    rejected(401, "slack", sign_slack(WRONG, body, int(NOW)), body)


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "url_verification"},
        {"type": "event_callback", "event": {"type": "app_mention"}},
        {"type": "event_callback", "event_id": "Ev1"},
        {"type": "event_callback", "event_id": "Ev1", "event": {"text": "no type"}},
        {"type": "app_rate_limited", "minute_rate_limited": 1518467820},
    ],
)
def test_slack_payloads_without_what_a_delivery_needs_are_422(payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    rejected(422, "slack", sign_slack(SECRET, body, int(NOW)), body)


def test_slack_signs_the_timestamp_too() -> None:
    body = fixture_bytes("slack_app_mention.json")
    headers = sign_slack(SECRET, body, int(NOW))
    headers["X-Slack-Request-Timestamp"] = str(int(NOW) - 10)  # still fresh, but not what was signed
    assert "does not match" in rejected(401, "slack", headers, body)


def test_the_slack_scheme_matches_slacks_documented_example() -> None:
    # https://api.slack.com/authentication/verifying-requests-from-slack (the documented signing secret and request)
    secret = b"8f742231b10e8888abcd99yyyzzz85a5"
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
        b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
        b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = sign_slack(secret, body, 1531420618)
    assert headers["X-Slack-Signature"] == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_the_github_scheme_matches_githubs_documented_example() -> None:
    # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
    headers = sign_github(b"It's a Secret to Everybody", b"Hello, World!", "push", "d")
    assert headers["X-Hub-Signature-256"] == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


# --- a property: verify refuses with a status, or accepts only what the right secret signed ------------------

HEADER_NAMES = [
    "Content-Type",
    "X-Hub-Signature-256",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-Slack-Signature",
    "X-Slack-Request-Timestamp",
    "X-Mnemoflow-Signature",
    "X-Mnemoflow-Timestamp",
    "X-Mnemoflow-Delivery",
]
header_values = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", "application/json; charset=utf-8", str(int(NOW))]),
    st.integers(min_value=0, max_value=10**16).map(str),
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
        max_leaves=12,
    ).map(lambda value: json.dumps(value).encode()),
    st.sampled_from([fixture_bytes(name) for name in BODIES.values()]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    provider=st.sampled_from(PROVIDERS),
    body=bodies,
    signer=st.sampled_from(["right", "wrong", "none"]),
    skew=st.integers(min_value=-1000, max_value=1000),
    overrides=st.dictionaries(
        st.sampled_from(HEADER_NAMES).map(lambda name: name if len(name) % 2 else name.lower()), header_values, max_size=4
    ),
    drops=st.sets(st.sampled_from(HEADER_NAMES), max_size=3),
    max_body_bytes=st.none() | st.integers(min_value=0, max_value=400),
)
def test_verify_only_rejects_with_a_status_or_accepts_what_the_right_secret_signed(
    provider: str,
    body: bytes,
    signer: str,
    skew: int,
    overrides: dict[str, str],
    drops: set[str],
    max_body_bytes: int | None,
) -> None:
    headers: dict[str, str] = {}
    if signer != "none":
        headers = signed(provider, body, secret=SECRET if signer == "right" else WRONG, timestamp=int(NOW) + skew)
    headers = {name: value for name, value in headers.items() if name not in drops}
    headers.update(overrides)
    try:
        delivery = verify(provider, headers, body, SECRET, now=NOW, max_body_bytes=max_body_bytes)
    except HookRejected as exc:
        assert exc.status in {401, 413, 415, 422}
        assert SECRET.decode() not in exc.reason
        return
    assert signer == "right"
    assert isinstance(delivery, Delivery) and isinstance(delivery.payload, dict)


# --- the hooks file ------------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hooks.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_hooks(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_the_example_file_loads() -> None:
    hooks = load_hooks(EXAMPLE)
    assert list(hooks) == ["ask-from-issue", "ask-from-slack", "text-stats", "repair-from-issue"]
    assert {hook.provider for hook in hooks.values()} == {"github", "slack", "generic"}
    assert all(hook.deployment.startswith("run_graph/") for hook in hooks.values())
    run_graph_parameters = {"graph", "input", "thread_id", "namespace", "store"}
    assert all(set(hook.parameters) <= run_graph_parameters for hook in hooks.values())
    assert hooks["ask-from-issue"].when_expression is not None
    assert set(hooks["ask-from-issue"].parameter_expressions) == {"input"}


def test_the_example_repair_hook_maps_a_labelled_issue_to_a_repair_run() -> None:
    hook = load_hooks(EXAMPLE)["repair-from-issue"]
    labelled = fixture("github_issues_opened.json")
    labelled["issue"]["labels"] = [{"name": "bug"}]
    delivery = Delivery(delivery_id="d1", event="issues", payload=labelled)
    assert accepts(hook, delivery) is None and hook.deployment == "run_graph/experepair"
    [(name, value)] = map_parameters(hook, labelled).items()
    assert name == "input" and value["repo"] == labelled["repository"]["full_name"]
    assert value["issue_id"] == f"{labelled['repository']['full_name']}#{labelled['issue']['number']}"
    assert value["issue"].startswith(labelled["issue"]["title"]) and value["repo_path"] == "/srv/clones/calc"
    labelled["issue"]["labels"] = [{"name": "question"}]
    assert "when condition" in str(accepts(hook, Delivery(delivery_id="d2", event="issues", payload=labelled)))


def test_a_minimal_hook_and_an_empty_hook_list_load(tmp_path: Path) -> None:
    hooks = load_hooks(write(tmp_path, "hooks:\n  - {name: a, provider: generic, secret_env: S, deployment: f/d}\n"))
    assert hooks["a"].events is None and hooks["a"].when is None and hooks["a"].parameters == {}
    assert load_hooks(write(tmp_path, "hooks: []\n")) == {}


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "hooks:\n  - name: a\n    provider: [github\n")
    assert ":4:" in message or ":3:" in message
    assert "yaml-syntax" in message


def test_an_unreadable_or_empty_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_hooks(tmp_path / "missing.yaml")
    assert "no hooks" in load_error(tmp_path, "# nothing\n")
    assert "'hooks:'" in load_error(tmp_path, "{}\n")
    assert "unknown top-level key 'hook'" in load_error(tmp_path, "hook: []\n")


GOOD = "    provider: github\n    secret_env: GITHUB_WEBHOOK_SECRET\n    deployment: run_graph/comorag-qa\n"


def test_an_unknown_provider_names_hook_and_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "hooks:\n  - name: ask\n    provider: gitlab\n    secret_env: S\n    deployment: f/d\n")
    assert ":3:" in message and "hook 'ask'" in message and "provider" in message and "'github'" in message


def test_an_inline_secret_is_refused_without_echoing_it(tmp_path: Path) -> None:
    message = load_error(tmp_path, "hooks:\n  - name: ask\n" + GOOD + "    secret: hunter2-hunter2\n")
    assert ":6:" in message and "hook 'ask'" in message and "secret_env" in message
    assert "hunter2" not in message


def test_a_secret_pasted_into_secret_env_is_not_echoed(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, "hooks:\n  - name: ask\n    provider: github\n    secret_env: 'sk-live/abc+123='\n    deployment: f/d\n"
    )
    assert "hook 'ask'" in message and "secret_env" in message and "abc+123" not in message


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, "hooks:\n  - name: ask\n" + GOOD + "  - name: ask\n" + GOOD)
    assert ":6:" in message and "hook 'ask'" in message and "line 2" in message and "duplicate-name" in message


@pytest.mark.parametrize(
    ("expression", "needle"),
    [
        ("issue.[", "incomplete"),
        ("issue ^ title", "Unknown token"),
        ("lenght(issue.labels)", "did you mean 'length'"),
        ("length(issue.labels, issue.title)", "takes 1 argument"),
        ("join(', ')", "takes 2 argument"),
        ("merge()", "at least 1"),
    ],
)
def test_bad_jmespath_is_refused_at_load(tmp_path: Path, expression: str, needle: str) -> None:
    text = "hooks:\n  - name: ask\n" + GOOD + f"    parameters:\n      input: {json.dumps(expression)}\n"
    message = load_error(tmp_path, text)
    assert ":7:" in message and "hook 'ask'" in message and "parameters.input" in message and needle in message
    message = load_error(tmp_path, "hooks:\n  - name: ask\n" + GOOD + f"    when: {json.dumps(expression)}\n")
    assert ":6:" in message and "when" in message and needle in message


def test_an_unquoted_multiselect_hash_gets_a_hint(tmp_path: Path) -> None:
    message = load_error(tmp_path, "hooks:\n  - name: ask\n" + GOOD + "    parameters:\n      input: {question: issue.title}\n")
    assert "quote an expression" in message


def test_events_on_a_generic_hook_are_refused(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, "hooks:\n  - name: g\n    provider: generic\n    secret_env: S\n    deployment: f/d\n    events: [push]\n"
    )
    assert ":6:" in message and "hook 'g'" in message and "generic hooks have no event types" in message


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = (
        "hooks:\n"
        "  - name: Bad Name\n"
        + GOOD
        + "  - name: b\n    provider: github\n    secret_env: S\n    deployment: no-slash\n    evnts: [x]\n"
        "  - name: c\n    provider: github\n    deployment: f/d\n"
    )
    message = load_error(tmp_path, text)
    assert "hooks[0]" in message or "hook 'Bad Name'" in message
    assert "deployment: 'no-slash' is not '<flow name>/<deployment name>'" in message
    assert "unknown key 'evnts'" in message and "did you mean 'events'" in message
    assert "hook 'c': missing required key 'secret_env'" in message
    assert len(message.splitlines()) == 4


def test_a_hook_secret_is_read_from_the_named_variable_and_a_blank_one_is_none() -> None:
    hook = HookSpec(name="a", provider="generic", secret_env="HOOK_SECRET", deployment="f/d")
    assert read_secrets({"a": hook}, {"HOOK_SECRET": "s3cr3t"}).secrets == {"a": b"s3cr3t"}
    for environ in ({}, {"HOOK_SECRET": ""}, {"HOOK_SECRET": "  "}):
        assert read_secrets({"a": hook}, environ).disabled == {"a": "HOOK_SECRET"}


# --- mapping ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> dict[str, HookSpec]:
    return load_hooks(EXAMPLE)


def delivery_of(name: str, event: str | None, **changes: Any) -> Delivery:
    payload = fixture(name)
    payload.update(changes)
    return Delivery("d1", event, payload)


def test_accepts_filters_events_then_when(example: dict[str, HookSpec]) -> None:
    hook = example["ask-from-issue"]
    assert accepts(hook, delivery_of("github_issues_opened.json", "issues")) is None
    assert accepts(hook, delivery_of("github_push.json", "push")) == "event 'push' is not in events [issues]"
    closed = accepts(hook, delivery_of("github_issues_opened.json", "issues", action="closed"))
    assert closed == f"when condition `{hook.when}` is false"
    unlabelled = fixture("github_issues_opened.json")
    unlabelled["issue"]["labels"] = [label for label in unlabelled["issue"]["labels"] if label["name"] != "question"]
    assert accepts(hook, Delivery("d2", "issues", unlabelled)) is not None
    assert accepts(hook, Delivery("p", "ping", {"zen": "Keep it logically awesome."})) is not None


def test_accepts_slack_by_event_type_and_never_a_challenge(example: dict[str, HookSpec]) -> None:
    hook = example["ask-from-slack"]
    assert accepts(hook, delivery_of("slack_app_mention.json", "app_mention")) is None
    assert accepts(hook, delivery_of("slack_app_mention.json", "message")) == "event 'message' is not in events [app_mention]"
    challenge = Delivery("url_verification:c", "url_verification", {"type": "url_verification", "challenge": "c"}, challenge="c")
    assert accepts(hook, challenge) is not None


def test_when_uses_jmespath_truth(example: dict[str, HookSpec]) -> None:
    hook = example["text-stats"]
    assert accepts(hook, Delivery("k", None, {"text": "Memory that lasts."})) is None
    assert accepts(hook, Delivery("k", None, {"text": ""})) is not None
    assert accepts(hook, Delivery("k", None, {"other": 1})) is not None
    zero = HookSpec(name="z", provider="generic", secret_env="S", deployment="f/d", when="count")
    assert accepts(zero, Delivery("k", None, {"count": 0})) is None  # 0 is true in JMESPath
    assert accepts(zero, Delivery("k", None, {"count": []})) is not None


def test_a_when_that_fails_on_the_payload_is_422() -> None:
    hook = HookSpec(name="w", provider="generic", secret_env="S", deployment="f/d", when="contains(labels[].name, 'q')")
    with pytest.raises(HookRejected) as info:
        accepts(hook, Delivery("k", None, {"title": "no labels"}))
    assert info.value.status == 422 and "when condition" in info.value.reason


def test_map_parameters_on_real_payloads(example: dict[str, HookSpec]) -> None:
    issue = fixture("github_issues_opened.json")
    assert map_parameters(example["ask-from-issue"], issue) == {
        "input": {"book_id": "the-salt-road", "question": issue["issue"]["title"] + "\n\n" + issue["issue"]["body"]}
    }
    issue["issue"]["body"] = None  # GitHub sends null for an issue opened without a description
    assert map_parameters(example["ask-from-issue"], issue)["input"]["question"] == issue["issue"]["title"] + "\n\n"
    mention = fixture("slack_app_mention.json")
    assert map_parameters(example["ask-from-slack"], mention) == {
        "input": {"book_id": "the-salt-road", "question": "<@U0LAN0Z89> who was Tobin Orsk's legal guardian?"}
    }
    push = HookSpec(
        name="push",
        provider="github",
        secret_env="S",
        deployment="run_graph/text-stats",
        parameters={
            "input": '{text: join(`"\\n"`, commits[].message)}',
            "thread_id": "join('@', [repository.full_name, after])",
            "namespace": "repository.name",
        },
    )
    assert map_parameters(push, fixture("github_push.json")) == {
        "input": {"text": "Add chapter 7 notes"},
        "thread_id": "octo-org/salt-road-notes@59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5",
        "namespace": "salt-road-notes",
    }


def reason_of(hook: HookSpec, payload: Any) -> str:
    with pytest.raises(HookRejected) as info:
        map_parameters(hook, payload)
    assert info.value.status == 422
    return info.value.reason


def test_a_missing_path_names_parameter_expression_key_and_path() -> None:
    hook = HookSpec(
        name="m",
        provider="github",
        secret_env="S",
        deployment="f/d",
        parameters={"input": "{book_id: 'the-salt-road', question: issue.title}"},
    )
    assert reason_of(hook, fixture("github_push.json")) == (
        "parameter 'input': `{book_id: 'the-salt-road', question: issue.title}` found nothing at 'issue' (key 'question') in the payload"
    )
    assert "at 'issue.title' (key 'question')" in reason_of(hook, {"issue": {"number": 1}})
    plain = HookSpec(
        name="p", provider="github", secret_env="S", deployment="f/d", parameters={"thread_id": "issue.labels[5].name"}
    )
    assert reason_of(plain, fixture("github_issues_opened.json")) == (
        "parameter 'thread_id': `issue.labels[5].name` found nothing at 'issue.labels[5]' in the payload"
    )
    listed = HookSpec(
        name="l", provider="github", secret_env="S", deployment="f/d", parameters={"input": "[issue.title, issue.nope]"}
    )
    assert "at 'issue.nope' (item 1)" in reason_of(listed, fixture("github_issues_opened.json"))


def test_evaluation_errors_and_non_json_results_are_422() -> None:
    typed = HookSpec(name="t", provider="generic", secret_env="S", deployment="f/d", parameters={"input": "length(count)"})
    reason = reason_of(typed, {"count": 3})
    assert reason.startswith("parameter 'input': `length(count)` failed on the payload")
    nan = HookSpec(name="n", provider="generic", secret_env="S", deployment="f/d", parameters={"input": "to_number(value)"})
    assert "not JSON" in reason_of(nan, {"value": "NaN"})


def test_a_hook_spec_keeps_its_compiled_expressions() -> None:
    hook = HookSpec(
        name="c", provider="slack", secret_env="S", deployment="f/d", when="event.user", parameters={"input": "event"}
    )
    assert hook.when_expression is not None and hook.when_expression.expression == "event.user"
    assert hook.parameter_expressions["input"].search({"event": {"a": 1}}) == {"a": 1}
    with pytest.raises(ValueError, match="unknown function"):
        HookSpec(name="c", provider="slack", secret_env="S", deployment="f/d", when="nope(event)")


def test_signing_helpers_round_trip_at_the_current_time() -> None:
    body = b'{"text": "now"}'
    now = time.time()
    assert verify("generic", sign_generic(SECRET, body, int(now)), body, SECRET, now=now).payload == {"text": "now"}
