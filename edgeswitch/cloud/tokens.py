"""The bearer token that client and server share: read once, checked to be one word."""

from __future__ import annotations

import os
from pathlib import Path

from edgeswitch.errors import EdgeSwitchError

TOKEN_ENV = "EDGESWITCH_TOKEN"


def resolve_token(token_file: str | Path | None = None, env: str = TOKEN_ENV) -> str | None:
    """The bearer token from a file (its first line) or else the environment; None = no auth."""
    if token_file is not None:
        try:
            lines = Path(token_file).read_text().splitlines()
        except OSError as exc:
            raise EdgeSwitchError(f"cannot read token file {token_file}: {exc}") from None
        token, where = (lines[0].strip() if lines else ""), f"token file {token_file}"
    else:
        token, where = os.environ.get(env, "").strip(), f"${env}"
        if not token:
            return None
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise EdgeSwitchError(f"{where}: the token must be one non-empty word without spaces")
    return token
