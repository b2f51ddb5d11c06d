"""Hiding the credentials a URL may carry (``scheme://user:password@host``) wherever a URL is shown.

Settings, error messages, log lines, stored run records and HTTP answers pass URLs through :func:`redact_url`
(one URL) or :func:`redact_urls` (any text that may contain URLs) before anyone sees them.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_url", "redact_urls"]

REDACTED = "***"
"""What the userinfo of a URL is replaced with."""

_USERINFO = re.compile(
    r"(?P<scheme>(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://)"
    r"(?:"
    # RFC 3986: the userinfo ends at the last '@' before the authority's end ('/', '?', '#')
    r"[^/?#\s@]*(?:@[^/?#\s@]*)*"
    # A password holding an unencoded '/', '?' or '#': urllib would end the authority there, take the user name for
    # the host and leave the rest of the password in the path. It is hidden up to the next '@' all the same; a path
    # segment opening with '@' ('/@scope') is not taken for one. Bounded, so that text with many URLs stays linear.
    r"|[^/?#\s@:]*:[^\s@\"'<>`]{0,255}[^\s@\"'<>`/]"
    r")@"
)


def redact_urls(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***`` (``http://***@host/``).

    It errs on the side of hiding: in ``http://host:8080/users/me@example.com`` (a port, then an '@' in the path)
    ``host:8080/users/me`` is taken for a user and a password.
    """
    if "://" not in text:  # the common case, and most log values: nothing to scan
        return text
    return _USERINFO.sub(lambda match: f"{match['scheme']}{REDACTED}@", text)


def redact_url(url: str | None) -> str | None:
    """``url`` without its credentials; ``None`` stays ``None``."""
    return None if url is None else redact_urls(url)
