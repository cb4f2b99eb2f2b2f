"""Demo signing keys and tokens (JWTs): HS256 with a key made per run,
published to Envoy's jwt_authn as a local JWKS (`kty: oct`). Standard
library only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

#: the seed document's claims for Alice (team dev) and Bob (team ops)
ALICE = {"iss": "solo.io", "org": "solo.io", "sub": "alice", "team": "dev", "llms": {"openai": ["gpt-3.5-turbo"]}}
BOB = {"iss": "solo.io", "org": "solo.io", "sub": "bob", "team": "ops", "llms": {"mistralai": ["mistral-large-latest"]}}


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class SigningKey:
    def __init__(self, secret: bytes | None = None, kid: str = "llmtally-demo"):
        self.secret = secret or secrets.token_bytes(32)
        self.kid = kid

    def jwks(self) -> str:
        return json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "kid": self.kid, "k": _b64(self.secret)}]})

    def token(self, claims: dict) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": self.kid}, separators=(",", ":")).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = hmac.new(self.secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(sig)}"
