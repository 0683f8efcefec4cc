"""Signing AgentLake's own records, so that a record in the store proves it was written by AgentLake.

The store is shared with whoever else can write to it, and some of AgentLake's records decide
what it deletes (trash records), what it keeps readable and through which metadata file (pins),
and what a decision read (context manifests). With ``AGENTLAKE_SIGNING_KEY`` set, each such record
carries ``"signature"``: an HMAC-SHA256, under that key, of the record's canonical JSON without
the signature itself. Readers then check it: a record without a valid signature is forged and is
acted on by nobody (maintenance refuses it, replay calls its artifact tampered, a pin is ignored).
Without a key records are unsigned and accepted, as AgentLake's own checks of each path stand alone.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
from pydantic import SecretStr

SIGNATURE = "signature"


def _digest(key: SecretStr, record: dict[str, Any]) -> str:
    body = orjson.dumps({k: v for k, v in record.items() if k != SIGNATURE}, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key.get_secret_value().encode(), body, hashlib.sha256).hexdigest()


def signed(key: SecretStr | None, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its signature (unchanged when no signing key is configured)."""
    if key is None:
        return record
    return {**record, SIGNATURE: _digest(key, record)}


def signature_problem(key: SecretStr | None, record: dict[str, Any]) -> str | None:
    """Why ``record`` is not provably AgentLake's (None when it is, or when no signing key is configured)."""
    if key is None:
        return None
    given = record.get(SIGNATURE)
    if not isinstance(given, str):
        return "it carries no signature, and AGENTLAKE_SIGNING_KEY is set: AgentLake did not write it"
    if not hmac.compare_digest(given, _digest(key, record)):
        return "its signature does not match its content under AGENTLAKE_SIGNING_KEY: it was forged or altered"
    return None
