"""ChatGPT sign-in for Codex: the gateway holds the user's tokens and refreshes them itself.

Codex signed in with a ChatGPT plan keeps `auth.json` (in `$CODEX_HOME`, else `~/.codex`):
`{"OPENAI_API_KEY": null, "tokens": {"id_token", "access_token", "refresh_token", "account_id"},
"last_refresh"}`. Measured here with Codex 0.169 (docs/gateway.md): through a custom provider with
`requires_openai_auth = true` it calls `POST {base}/responses` with `Authorization: Bearer <access_token>`
and `chatgpt-account-id: <account_id>`; the ChatGPT backend's base is `https://chatgpt.com/backend-api/codex`.
It refreshes an access token whose JWT `exp` has passed with `POST https://auth.openai.com/oauth/token`
(`{"client_id", "grant_type": "refresh_token", "refresh_token"}`, answered with new tokens; the refresh token
rotates) and rewrites auth.json.

Here the container gets placeholders only, and the gateway does the refresh: before a request when the
access token expires within REFRESH_MARGIN, and after the upstream answered 401. The rotated tokens are
written back to the user's auth.json (atomically, mode 0600), so that the user's own Codex keeps working.
`CODEX_REFRESH_TOKEN_URL_OVERRIDE`, which Codex itself honours, points the refresh elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.base.atomic import write_atomic
from runner.record.models import utcnow

log = logging.getLogger(__name__)

BASE_URL = "https://chatgpt.com/backend-api/codex"
TOKEN_URL = "https://auth.openai.com/oauth/token"  # noqa: S105 - a URL, not a secret
TOKEN_URL_ENV = "CODEX_REFRESH_TOKEN_URL_OVERRIDE"  # noqa: S105 - a variable's name
CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"  # Codex's own OAuth client (its public source and requests)
REFRESH_MARGIN = 300.0  # seconds before expiry at which a token is refreshed
MAX_AUTH_BYTES = 64 * 1024
REFRESH_TIMEOUT = 30.0


def auth_file(env: Mapping[str, str]) -> Path:
    """Where Codex keeps its sign-in on this host."""
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"]) / "auth.json"
    return Path(env.get("HOME") or Path.home()) / ".codex" / "auth.json"


@dataclass
class Tokens:
    access_token: str
    refresh_token: str
    id_token: str
    account_id: str | None


def read_tokens(path: Path) -> Tokens | None:
    """The ChatGPT tokens of an auth.json; None when there is none (no file, an API key, unreadable)."""
    try:
        if path.stat().st_size > MAX_AUTH_BYTES:
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, dict) or data.get("OPENAI_API_KEY"):
        return None  # Codex uses an auth.json that holds a key as that key
    access, refresh = tokens.get("access_token"), tokens.get("refresh_token")
    if not isinstance(access, str) or not access or not isinstance(refresh, str) or not refresh:
        return None
    account = tokens.get("account_id")
    id_token = tokens.get("id_token")
    return Tokens(access, refresh, id_token if isinstance(id_token, str) else "",
                  account if isinstance(account, str) and account else None)  # fmt: skip


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (epoch seconds), read without checking its signature; None for an opaque token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class ChatGPTAuth:
    """The tokens of one sign-in, refreshed in the gateway's loop (one refresh at a time)."""

    def __init__(self, tokens: Tokens, path: Path, token_url: str = TOKEN_URL) -> None:
        self.tokens = tokens
        self.path = path
        self.token_url = token_url
        self.refreshes = 0
        self._expired = False  # the upstream said 401: refresh before the next request
        self._lock: asyncio.Lock | None = None

    def headers(self) -> dict[str, str]:
        found = {"authorization": f"Bearer {self.tokens.access_token}"}
        if self.tokens.account_id:
            found["chatgpt-account-id"] = self.tokens.account_id
        return found

    def secrets(self) -> dict[str, str]:
        """Every token, by a name, for the redactor."""
        t = self.tokens
        named = {"CHATGPT_ACCESS_TOKEN": t.access_token, "CHATGPT_REFRESH_TOKEN": t.refresh_token,
                 "CHATGPT_ID_TOKEN": t.id_token}  # fmt: skip
        return {k: v for k, v in named.items() if v}

    def expire(self) -> None:
        self._expired = True

    def stale(self, now: float | None = None) -> bool:
        exp = jwt_expiry(self.tokens.access_token)
        return self._expired or (exp is not None and exp - (now or time.time()) < REFRESH_MARGIN)

    async def fresh(self, session: Any) -> bool:
        """Refresh the tokens if they are stale; True when they changed. A failed refresh is logged and the
        old token is used (the upstream's 401 then reaches the agent)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self.stale():
                return False  # another request refreshed them meanwhile
            return await self._refresh(session)

    async def _refresh(self, session: Any) -> bool:
        import aiohttp

        body = {"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": self.tokens.refresh_token}
        try:
            async with session.post(self.token_url, json=body, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=REFRESH_TIMEOUT)) as answer:  # fmt: skip
                data = await answer.json(content_type=None) if answer.status == 200 else None
                status = answer.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.warning("ChatGPT sign-in: the token refresh failed (%s)", type(exc).__name__)
            return False
        access = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(access, str) or not access:
            log.warning("ChatGPT sign-in: the token refresh was refused (HTTP %s): sign in again with `codex login`",
                        status)  # fmt: skip
            return False
        assert isinstance(data, dict)  # noqa: S101 - checked above
        t = self.tokens
        t.access_token = access
        t.refresh_token = _text(data.get("refresh_token")) or t.refresh_token
        t.id_token = _text(data.get("id_token")) or t.id_token
        self._expired = False
        self.refreshes += 1
        self._write_back()
        log.info("ChatGPT sign-in: tokens refreshed")
        return True

    def _write_back(self) -> None:
        """The rotated tokens into the user's auth.json, its other keys kept: the user's Codex needs them."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        kept = data.get("tokens")
        tokens: dict[str, Any] = kept if isinstance(kept, dict) else {}
        t = self.tokens
        data["tokens"] = {**tokens, "access_token": t.access_token, "refresh_token": t.refresh_token,
                          "id_token": t.id_token, "account_id": t.account_id}  # fmt: skip
        data["last_refresh"] = utcnow().isoformat().replace("+00:00", "Z")
        try:
            write_atomic(self.path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)
        except OSError as exc:
            log.warning("ChatGPT sign-in: could not write the refreshed tokens to %s: %s", self.path, exc)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def chatgpt_auth(env: Mapping[str, str] | None = None) -> ChatGPTAuth | None:
    """The host's ChatGPT sign-in, if Codex has one here."""
    env = os.environ if env is None else env
    path = auth_file(env)
    tokens = read_tokens(path)
    return None if tokens is None else ChatGPTAuth(tokens, path, env.get(TOKEN_URL_ENV) or TOKEN_URL)
