"""Signing AgentLake's own records, so that a record in the store proves it was written by AgentLake.

The store is shared with whoever else can write to it, and some of AgentLake's records decide
what it deletes (trash records), what it keeps readable and through which metadata file (pins),
what a decision read (context manifests), what a publish decided and on what evidence (audit
records, validation results) and what the tables are built from (log segments). With
``AGENTLAKE_SIGNING_KEY`` set, each such record carries ``"signature"``: an HMAC-SHA256, under
that key, of the record's canonical JSON without the signature itself; a segment carries one in
its key (:func:`segment_signature`). Readers then check it: a record without a valid signature is
forged and is acted on by nobody (maintenance refuses it, replay calls its artifact tampered, a
pin is ignored, a segment is held as a whole, reconcile names an audit record). Without a key
records are unsigned and accepted, as AgentLake's own checks of each path stand alone.

Keys retired by a rotation may be listed in ``AGENTLAKE_SIGNING_KEYS_PREVIOUS``: what they signed
still verifies, and nothing new is signed with them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import SecretStr

from agentlake.config import Settings

SIGNATURE = "signature"
# A segment's signature in its key: 128 bits of the HMAC, in hex (the key stays short and sortable).
SEGMENT_SIGNATURE_HEX = 32
_SEGMENT_CONTEXT = b"agentlake segment v1\n"


def _digest(key: SecretStr, record: dict[str, Any]) -> str:
    body = orjson.dumps({k: v for k, v in record.items() if k != SIGNATURE}, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key.get_secret_value().encode(), body, hashlib.sha256).hexdigest()


def signed(key: SecretStr | None, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its signature (unchanged when no signing key is configured)."""
    if key is None:
        return record
    return {**record, SIGNATURE: _digest(key, record)}


def signature_problem(key: SecretStr | None, record: dict[str, Any], previous: Sequence[SecretStr] = ()) -> str | None:
    """Why ``record`` is not provably AgentLake's (None when it is, or when no signing key is configured).

    Args:
        previous: retired keys whose signatures still verify (``AGENTLAKE_SIGNING_KEYS_PREVIOUS``).
    """
    if key is None:
        return None
    given = record.get(SIGNATURE)
    if not isinstance(given, str):
        return "it carries no signature, and AGENTLAKE_SIGNING_KEY is set: AgentLake did not write it"
    if not any(hmac.compare_digest(given, _digest(k, record)) for k in (key, *previous)):
        return "its signature does not match its content under AGENTLAKE_SIGNING_KEY: it was forged or altered"
    return None


def record_problem(settings: Settings, record: dict[str, Any]) -> str | None:
    """:func:`signature_problem` under the deployment's signing key and its retired keys."""
    return signature_problem(settings.signing_key, record, settings.previous_signing_keys)


def segment_signature(key: SecretStr, unsigned_key: str, sha256: str) -> str:
    """The signature a segment's key carries: an HMAC of its key (without the signature) and of the full
    sha256 of its bytes, so neither the key's claims nor one byte of content can change without the key."""
    body = _SEGMENT_CONTEXT + unsigned_key.encode() + b"\n" + sha256.encode()
    return hmac.new(key.get_secret_value().encode(), body, hashlib.sha256).hexdigest()[:SEGMENT_SIGNATURE_HEX]


def segment_signature_problem(
    key: SecretStr | None, unsigned_key: str, signature: str | None, sha256: str | None,
    previous: Sequence[SecretStr] = (),
) -> str | None:
    """Why a segment is not provably AgentLake's (None when it is, or when no signing key is configured).

    Args:
        signature: the one its key carries, if any.
        sha256: the full sha256 of its bytes, in hex; None to check only that it carries one.
    """
    if key is None:
        return None
    if signature is None:
        return "its key carries no signature, and AGENTLAKE_SIGNING_KEY is set: AgentLake's log writer did not write it"
    if sha256 is None:
        return None
    if not any(hmac.compare_digest(signature, segment_signature(k, unsigned_key, sha256)) for k in (key, *previous)):
        return ("the signature in its key does not match its key and content under AGENTLAKE_SIGNING_KEY "
                "(nor a key of AGENTLAKE_SIGNING_KEYS_PREVIOUS): it was forged or altered")
    return None
