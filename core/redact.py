"""Secrets kept out of what a command writes: the console, its log, MLflow params, run folders.

Two kinds reach us on command lines and in configs: credentials inside a URI
(``http://user:token@host``, a tracking server behind basic auth; a presigned URL's signature)
and fsspec ``--storage-options`` (``{"key": ..., "secret": ...}``). Every writer that may see
them passes text through :func:`redact_text`, a command line through :func:`redact_argv`, and a
URI through :func:`redact_uri`. The redacted forms keep their shape (``user:***@host``) so a
reader sees that something was removed; pass credentials through the environment instead
(``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, ``AWS_*``), which nothing records.
"""

from __future__ import annotations

import re

MASK = "***"
# Options whose whole value is a secret (fsspec credentials as JSON).
SECRET_OPTIONS = ("--storage-options",)
# scheme://user:password@host -> scheme://user:***@host
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*):(?P<secret>[^/\s@]+)@")
# Query parameters and JSON/YAML/Python keys that carry a credential.
_KEYS = (r"(?:secret|password|passwd|token|key|access[_-]?key(?:[_-]?id)?|secret[_-]?access[_-]?key|"
         r"session[_-]?token|api[_-]?key|auth|authorization|credentials?|signature|x-amz-signature|"
         r"x-amz-credential|x-amz-security-token|sig)")
_QUERY = re.compile(rf"(?P<head>[?&]{_KEYS}=)(?P<secret>[^&\s\"']+)", re.IGNORECASE)
_QUOTED = re.compile(rf"(?P<head>[\"']{_KEYS}[\"']\s*:\s*)(?P<secret>\"[^\"]*\"|'[^']*')", re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """``uri`` with a password in its userinfo and credential query parameters masked."""
    return _QUERY.sub(rf"\g<head>{MASK}", _USERINFO.sub(rf"\g<head>:{MASK}@", str(uri)))


def redact_text(text: str) -> str:
    """``text`` with URI credentials and quoted secret keys' values (``"secret": "..."``) masked."""
    text = redact_uri(text)
    if "'" in text or '"' in text:
        text = _QUOTED.sub(lambda m: f"{m['head']}{m['secret'][0]}{MASK}{m['secret'][0]}", text)
    return text


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with the values of :data:`SECRET_OPTIONS` replaced and every argument :func:`redact_text`-ed."""
    out: list[str] = []
    hide = False
    for arg in argv:
        if hide:
            out.append(MASK)
            hide = False
            continue
        name = arg.split("=", 1)[0]
        if name in SECRET_OPTIONS:
            if "=" in arg:
                out.append(f"{name}={MASK}")
            else:
                out.append(arg)
                hide = True
            continue
        out.append(redact_text(arg))
    return out
