"""Take secrets out of text before it is printed, logged or stored."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

MASK = "***"

_RULES = [
    # scheme://user:password@host, scheme://KEY@bucket
    (re.compile(r"(\b[A-Za-z][\w+.-]*://)[^\s@'\"]+@"), r"\1" + MASK + "@"),
    # the same with the scheme gone (a bucket path): KEY:SECRET@bucket/...
    (re.compile(r"(?<![\w/*])[A-Za-z0-9+/=_.-]{4,}:[^\s@'\"]{4,}@"), MASK + "@"),
    # key=value with a secret-shaped key (URI query strings, env-style lines, kwargs)
    (re.compile(r"(?i)\b((?:[\w-]*(?:secret|password|passwd|token|credential|api[_-]?key|"
                r"access[_-]?key|session[_-]?key|private[_-]?key)[\w-]*)\s*[=:]\s*)"
                r"(?![*]{3})[^\s&'\",;)]+"), r"\1" + MASK),
    # HTTP authorization headers
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + MASK),
]

# user:password@ (a secret may hold "/", which ends urlsplit's netloc early)
_USERINFO = re.compile(r"^[A-Za-z][\w+.-]*://[^@?#\s]*:[^@?#\s]*@")
_SECRET_QUERY_KEYS = re.compile(r"(?i)secret|password|passwd|token|credential|access_key|api_?key")


def redact(text: str) -> str:
    """``text`` with credentials in URIs, secret-shaped ``key=value`` pairs and tokens masked.

    Example:
        >>> redact("cannot write to s3://AKIA123:abc/def@bucket/x")
        'cannot write to s3://***@bucket/x'
        >>> redact("s3://bucket/x?access_key=AK&secret_key=SK")
        's3://bucket/x?access_key=***&secret_key=***'
        >>> redact("cannot write to KEY1:SECRET/2@bucket/x")
        'cannot write to ***@bucket/x'
        >>> redact("authorization: Bearer 0123456789abcdef")
        'authorization: Bearer ***'
        >>> redact("storage.path: results/tiny")
        'storage.path: results/tiny'
    """
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text


def uri_credentials(uri: str) -> bool:
    """True if ``uri`` carries credentials: ``user[:password]@`` or a secret in its query.

    Example:
        >>> uri_credentials("s3://KEY:SECRET@bucket/x"), uri_credentials("s3://bucket/x")
        (True, False)
        >>> uri_credentials("s3://AKIA:abc/def@bucket/x"), uri_credentials("gs://b/exp@v2")
        (True, False)
        >>> uri_credentials("s3://bucket/x?secret_key=S&region=eu")
        True
    """
    if "://" not in uri:
        return False
    parts = urlsplit(uri)
    if "@" in parts.netloc or _USERINFO.match(uri):
        return True
    return any(_SECRET_QUERY_KEYS.search(k) for k, _ in parse_qsl(parts.query))
