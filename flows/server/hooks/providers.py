"""Verifying a webhook delivery: the signature schemes of GitHub, Slack and mnemoflow's own.

:func:`verify` checks a request's headers and raw body against a hook's secret and returns a :class:`Delivery`,
or raises :class:`HookRejected` with the HTTP status to answer. The checks run in one order for every scheme,
and the body is parsed only once its signature is known good:

1. size (413, when ``max_body_bytes`` is given), then content type (415; ``charset`` and other params ignored);
2. signature headers present (401);
3. timestamp, where the scheme has one: ``[0-9]+`` unix seconds no more than ``tolerance_s`` in the past or
   the future (401);
4. signature: HMAC-SHA256, compared in constant time with :func:`hmac.compare_digest` (401);
5. body: a JSON object nested at most :data:`MAX_DEPTH` levels (422);
6. delivery id (and event, for GitHub) present, at most 200 printable characters (422).

The schemes (``sign_github``, ``sign_slack`` and ``sign_generic`` build the headers a sender would send):

github
    ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``, ``X-GitHub-Event: <event>`` (``ping`` when
    a hook is created), ``X-GitHub-Delivery: <GUID>``. Content type ``application/json``, or
    ``application/x-www-form-urlencoded`` whose body is ``payload=<url-encoded JSON>``. No timestamp: GitHub's
    scheme cannot refuse a replay, and the delivery id is not signed: the receiver's de-duplication by
    signature is what stops one (a captured request resent under a fresh id carries the same signature).
slack
    ``X-Slack-Request-Timestamp: <unix seconds>``, ``X-Slack-Signature: v0=<hex HMAC-SHA256(secret,
    "v0:" + timestamp + ":" + body)>``; the Events API's JSON only. A ``url_verification`` payload gives a
    delivery carrying its ``challenge`` (the receiver answers it); an ``event_callback`` gives the delivery id
    ``event_id`` and the event ``event.type``.
generic (mnemoflow's own, for any sender that can compute an HMAC)
    ``Content-Type: application/json``;
    ``X-Mnemoflow-Timestamp: <unix seconds>``;
    ``X-Mnemoflow-Delivery: <idempotency key, 1 to 200 printable characters>``;
    ``X-Mnemoflow-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + delivery + "." + body)>``
    (the key is signed, so a captured request cannot be resent under a new key). The event is ``None``.
    For example, in a shell::

        ts=$(date +%s); id=$(uuidgen); body='{"question": "Who guarded Tobin?"}'
        sig=$(printf '%s.%s.%s' "$ts" "$id" "$body" | openssl dgst -sha256 -hmac "$SECRET" -hex | sed 's/.* //')
        curl -H 'Content-Type: application/json' -H "X-Mnemoflow-Timestamp: $ts" \\
             -H "X-Mnemoflow-Signature: sha256=$sig" -H "X-Mnemoflow-Delivery: $id" \\
             --data "$body" http://localhost:8000/hooks/NAME
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import parse_qs

from mnemoflow.errors import MnemoflowError

__all__ = ["MAX_DELIVERY_ID", "MAX_DEPTH", "Delivery", "HookRejected", "sign_generic", "sign_github", "sign_slack", "verify"]

MAX_DELIVERY_ID = 200
"""The longest delivery id (idempotency key) accepted, in characters."""

MAX_DEPTH = 64
"""The deepest nesting of lists and objects a payload may have (deeper ones break mapping and serializers)."""

_TIMESTAMP = re.compile(r"[0-9]{1,15}", re.ASCII)
_MAX_EVENT = 100


class HookRejected(MnemoflowError, ValueError):
    """Raised when a delivery is refused; ``status`` is the HTTP status to answer and ``reason`` says why.

    The reason never contains the secret, a signature or the body.
    """

    code = "hook-rejected"

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"HookRejected({self.status}, {self.reason!r})"


@dataclass(frozen=True)
class Delivery:
    """A verified delivery: its id (for de-duplication), its event, and its JSON payload."""

    delivery_id: str
    """GitHub's ``X-GitHub-Delivery``, Slack's ``event_id`` (``url_verification:<challenge>`` for a
    challenge), or the generic ``X-Mnemoflow-Delivery``."""
    event: str | None
    """GitHub's ``X-GitHub-Event``, Slack's ``event.type`` (``url_verification`` for a challenge); ``None``
    for generic hooks."""
    payload: Any
    """The body's JSON object."""
    challenge: str | None = None
    """Slack's ``url_verification`` challenge, which the receiver echoes; ``None`` otherwise."""
    signature: str = ""
    """The verified signature (lowercase hex): a replay carries the same one, whatever its delivery id."""


def _reject(status: int, reason: str) -> NoReturn:
    raise HookRejected(status, reason)


def _hmac_hex(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _require(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name.lower(), "").strip()
    if not value:
        _reject(401, f"missing {name} header")
    return value


def _check_timestamp(value: str, header: str, now: float, tolerance_s: float) -> None:
    if not _TIMESTAMP.fullmatch(value):
        _reject(401, f"{header} is not a unix time in whole seconds")
    age = now - int(value)
    if age > tolerance_s:
        _reject(401, f"stale delivery: {header} is {age:.0f}s old, more than the {tolerance_s:g}s allowed")
    if -age > tolerance_s:
        _reject(401, f"{header} is {-age:.0f}s in the future, more than the {tolerance_s:g}s allowed")


def _check_signature(given: str, prefix: str, expected_hex: str, header: str) -> str:
    """The signature, once it matches ``expected_hex``."""
    if not given.startswith(prefix):
        _reject(401, f"{header} does not start with {prefix!r}")
    # bytes, so that a non-ASCII header cannot make compare_digest raise TypeError
    if not hmac.compare_digest(given[len(prefix) :].strip().lower().encode("utf-8", "replace"), expected_hex.encode("ascii")):
        _reject(401, f"{header} does not match the body: wrong secret, or the body was changed")
    return expected_hex


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _json_object(data: bytes | str) -> dict[str, Any]:
    try:
        payload = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        _reject(422, f"the body is nested more than {MAX_DEPTH} levels deep")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        _reject(422, f"the body is not valid JSON: {exc}")
    if not isinstance(payload, dict):
        _reject(422, f"the body is JSON {type(payload).__name__}, not an object")
    if _depth(payload) > MAX_DEPTH:
        _reject(422, f"the body is nested more than {MAX_DEPTH} levels deep")
    return payload


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (a scalar is 0), without recursion."""
    deepest, level = 0, [(value, 0)]
    while level:
        item, depth = level.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_DEPTH:
            return deepest
        level.extend((child, depth + 1) for child in children)
    return deepest


def _identifier(value: Any, what: str, limit: int = MAX_DELIVERY_ID) -> str:
    if not isinstance(value, str) or not value.strip():
        _reject(422, f"missing {what}")
    text = value.strip()
    if len(text) > limit or not text.isprintable():
        _reject(422, f"{what} must be 1 to {limit} printable characters")
    return text


def _verify_github(headers: Mapping[str, str], body: bytes, secret: bytes) -> Delivery:
    media_type = _media_type(headers)
    if media_type not in ("application/json", "application/x-www-form-urlencoded"):
        _reject(
            415, f"github hooks take application/json or application/x-www-form-urlencoded, not {media_type or 'no content type'}"
        )
    signature = _check_signature(
        _require(headers, "X-Hub-Signature-256"), "sha256=", _hmac_hex(secret, body), "X-Hub-Signature-256"
    )
    if media_type == "application/json":
        payload = _json_object(body)
    else:
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, max_num_fields=10)
        except (ValueError, UnicodeDecodeError) as exc:
            _reject(422, f"the form body is not valid: {exc}")
        values = form.get("payload", [])
        if len(values) != 1:
            _reject(422, "a form-encoded GitHub delivery has exactly one 'payload' field")
        payload = _json_object(values[0])
    event = _identifier(headers.get("x-github-event"), "X-GitHub-Event header", _MAX_EVENT)
    delivery_id = _identifier(headers.get("x-github-delivery"), "X-GitHub-Delivery header")
    return Delivery(delivery_id, event, payload, signature=signature)


def _verify_slack(headers: Mapping[str, str], body: bytes, secret: bytes, now: float, tolerance_s: float) -> Delivery:
    media_type = _media_type(headers)
    if media_type != "application/json":
        _reject(415, f"slack hooks take the Events API's JSON (application/json), not {media_type or 'no content type'}")
    timestamp = _require(headers, "X-Slack-Request-Timestamp")
    signature = _require(headers, "X-Slack-Signature")
    _check_timestamp(timestamp, "X-Slack-Request-Timestamp", now, tolerance_s)
    signature = _check_signature(
        signature, "v0=", _hmac_hex(secret, b"v0:" + timestamp.encode("ascii") + b":" + body), "X-Slack-Signature"
    )
    payload = _json_object(body)
    kind = payload.get("type")
    if kind == "url_verification":
        challenge = payload.get("challenge")
        if not isinstance(challenge, str) or not challenge:
            _reject(422, "a url_verification payload has no challenge")
        delivery_id = _identifier("url_verification:" + challenge, "url_verification challenge")
        return Delivery(delivery_id, "url_verification", payload, challenge=challenge, signature=signature)
    if kind == "event_callback":
        event = payload.get("event")
        if not isinstance(event, dict):
            _reject(422, "an event_callback payload has no event object")
        event_type = _identifier(event.get("type"), "event.type", _MAX_EVENT)
        return Delivery(_identifier(payload.get("event_id"), "event_id"), event_type, payload, signature=signature)
    _reject(422, f"slack payload type {str(kind)[:_MAX_EVENT]!r} is not url_verification or event_callback")


def _verify_generic(headers: Mapping[str, str], body: bytes, secret: bytes, now: float, tolerance_s: float) -> Delivery:
    media_type = _media_type(headers)
    if media_type != "application/json":
        _reject(415, f"generic hooks take application/json, not {media_type or 'no content type'}")
    timestamp = _require(headers, "X-Mnemoflow-Timestamp")
    signature = _require(headers, "X-Mnemoflow-Signature")
    delivery = _require(headers, "X-Mnemoflow-Delivery")
    _check_timestamp(timestamp, "X-Mnemoflow-Timestamp", now, tolerance_s)
    signature = _check_signature(
        signature, "sha256=", _hmac_hex(secret, _generic_message(timestamp, delivery, body)), "X-Mnemoflow-Signature"
    )
    payload = _json_object(body)
    return Delivery(_identifier(delivery, "X-Mnemoflow-Delivery header"), None, payload, signature=signature)


def _generic_message(timestamp: str, delivery: str, body: bytes) -> bytes:
    # the delivery id is signed too: a captured request resent under a new id would otherwise start a second run
    return timestamp.encode("utf-8") + b"." + delivery.encode("utf-8") + b"." + body


def verify(
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    secret: bytes,
    *,
    now: float,
    tolerance_s: float = 300,
    max_body_bytes: int | None = None,
) -> Delivery:
    """Check a delivery's signature with ``secret``, then parse it (see the module docstring for the order).

    ``headers`` may use any case; ``now`` is the current unix time (``time.time()``); ``tolerance_s`` bounds how
    far a signed timestamp may lie in the past or the future; ``max_body_bytes``, when given, refuses larger
    bodies with 413 (a server should also stop reading past it).

    Raises:
        HookRejected: 413, 415, 401 or 422, with the reason.
        ValueError: ``provider`` is unknown or ``secret`` is empty (a configuration error, not the sender's).
    """
    if not secret:
        raise ValueError("a hook secret must not be empty")
    if max_body_bytes is not None and len(body) > max_body_bytes:
        _reject(413, f"the body is {len(body)} bytes, more than the {max_body_bytes} allowed")
    lowered = {name.lower(): value for name, value in headers.items()}
    if provider == "github":
        return _verify_github(lowered, body, secret)
    if provider == "slack":
        return _verify_slack(lowered, body, secret, now, tolerance_s)
    if provider == "generic":
        return _verify_generic(lowered, body, secret, now, tolerance_s)
    raise ValueError(f"unknown webhook provider {provider!r}; expected github, slack or generic")


def sign_github(
    secret: bytes, body: bytes, event: str, delivery: str, *, content_type: str = "application/json"
) -> dict[str, str]:
    """The headers GitHub sends with ``body`` (``content_type`` ``application/x-www-form-urlencoded`` for form mode)."""
    return {
        "Content-Type": content_type,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + _hmac_hex(secret, body),
    }


def sign_slack(secret: bytes, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers Slack's Events API sends with ``body`` at unix time ``timestamp``."""
    ts = str(int(timestamp))
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + _hmac_hex(secret, b"v0:" + ts.encode("ascii") + b":" + body),
    }


def sign_generic(secret: bytes, body: bytes, timestamp: int, *, delivery: str | None = None) -> dict[str, str]:
    """The headers of a generic delivery of ``body`` at unix time ``timestamp``.

    ``delivery`` is the idempotency key: send the same one when retrying the same delivery, so that it starts
    one flow run; a fresh random key by default.
    """
    ts = str(int(timestamp))
    key = delivery if delivery is not None else uuid.uuid4().hex
    return {
        "Content-Type": "application/json",
        "X-Mnemoflow-Timestamp": ts,
        "X-Mnemoflow-Signature": "sha256=" + _hmac_hex(secret, _generic_message(ts, key, body)),
        "X-Mnemoflow-Delivery": key,
    }
