"""Validation of ``POST /messages``: raw request in, AppendRequest or a 4xx out.

Functions without state; thread: any (``read_body`` the Waitress worker
serving the request). Every rejection names what is wrong,
and nothing is appended for it. The rules:

- Content-Type, when sent, must be JSON (``application/json`` or ``*+json``),
  or curl's default for ``-d``, ``application/x-www-form-urlencoded``, whose
  body is read as JSON all the same: else 415. (The body size limit, 413, is
  checked while reading it, in primary.api.)
- The body is UTF-8 JSON holding an object, whatever the type: else 400.
- Its fields are either ``message`` (a string) or ``messages`` (a batch: a
  non-empty list of strings, at most ``max_batch`` of them, else 413),
  and ``w`` and ``timeout`` (optional); any other field is rejected, so a
  typo such as ``"timout"`` cannot silently drop a setting.
- ``w`` is an integer in 1..cluster size, or ``"all"`` or ``"majority"``;
  absent means ``"all"``. Booleans and floats are not integers.
- ``timeout`` is a number of seconds in (0, MAX_TIMEOUT_S]; absent or null
  means wait as long as it takes.
- The optional ``Idempotency-Key`` header is 1 to KEY_MAX_LENGTH visible ASCII
  characters.
"""

from __future__ import annotations

import json
import math

import bottle
from dataclasses import dataclass

from shared.log.idempotency import KEY_MAX_LENGTH, KEY_PATTERN
from shared.consensus.quorum import majority

#: The longest wait a client may ask for. Past an hour a client should poll.
#: primary.openapi documents it from here, so document and code agree.
MAX_TIMEOUT_S = 3600
ALLOWED_FIELDS = ("message", "messages", "w", "timeout")
#: What ``curl -d '{"message": ...}'`` sends without ``-H``. Refusing it would
#: turn away the request as most people first type it.
CURL_FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class AppendRequest:
    #: One message, or a batch appended at consecutive ids, all or nothing.
    messages: tuple[str, ...]
    w: int
    timeout: float | None
    batch: bool = False


def parse_append(body: bytes, cluster_size: int, media_type: str = "",
                 max_batch: int = 10_000) -> AppendRequest:
    """``media_type`` is what check_content_type returned; it only words errors."""
    document = _decode_json(body, _FORM_HINT if media_type == CURL_FORM_MEDIA_TYPE else "")
    if not isinstance(document, dict):
        raise BadRequest(400, "body must be a JSON object")
    unknown = sorted(set(document) - set(ALLOWED_FIELDS))
    if unknown:
        raise BadRequest(
            400, f"unknown field(s) {', '.join(map(repr, unknown))}; "
                 f"allowed: {', '.join(ALLOWED_FIELDS)}"
        )
    batch = "messages" in document
    return AppendRequest(
        messages=_batch(document, max_batch) if batch else (_message(document),),
        w=resolve_w(document.get("w", "all"), cluster_size),
        timeout=_timeout(document.get("timeout")),
        batch=batch,
    )


def read_body(limit: int) -> bytes:
    """The body of the request Bottle is serving; 413 if it is longer than
    ``limit`` bytes, which are never read past."""
    length = bottle.request.content_length
    body = b""
    if length <= limit:  # -1 when unknown: read, but never more than limit + 1 bytes
        body = bottle.request.environ["wsgi.input"].read(length if length >= 0 else limit + 1)
    if length > limit or len(body) > limit:
        raise BadRequest(413, f"body is larger than the {limit}-byte limit (MAX_MESSAGE_BYTES)")
    return body


def check_content_type(content_type: str) -> str:
    """The media type, lower-cased, "" when none was sent; 415 unless it is accepted."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if (
        media_type
        and media_type not in ("application/json", CURL_FORM_MEDIA_TYPE)
        and not media_type.endswith("+json")
    ):
        raise BadRequest(415, f"Content-Type must be application/json, got {media_type!r}")
    return media_type


def parse_idempotency_key(header: str | None) -> str | None:
    if header is None:
        return None
    if not KEY_PATTERN.fullmatch(header):
        raise BadRequest(
            400, f"Idempotency-Key must be 1 to {KEY_MAX_LENGTH} visible ASCII characters"
        )
    return header


def resolve_w(value: object, cluster_size: int) -> int:
    """Turn a write concern into a node count, the primary included."""
    if value == "all":
        return cluster_size
    if value == "majority":
        return majority(cluster_size)
    if type(value) is not int:
        raise BadRequest(
            400,
            f"write concern 'w' must be an integer, \"all\" or \"majority\", "
            f"got {_describe(value)}",
        )
    if not 1 <= value <= cluster_size:
        secondaries = cluster_size - 1
        raise BadRequest(
            400,
            f"write concern 'w' must be between 1 and {cluster_size} (1 + {secondaries} "
            f"secondar{'y' if secondaries == 1 else 'ies'}), got {value}",
        )
    return value


#: Added to a decoding error under curl's form type: someone may have sent
#: form fields (``-d message=hi``), which are not read.
_FORM_HINT = (
    f" (Content-Type {CURL_FORM_MEDIA_TYPE}, curl's default for -d, is read as JSON:"
    " send a JSON object, not form fields)"
)


def _decode_json(body: bytes, hint: str) -> object:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(400, f"body is not valid UTF-8 (byte {exc.start}){hint}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BadRequest(400, f"body is not valid JSON: {exc}{hint}") from None
    except RecursionError:
        raise BadRequest(400, f"body is not valid JSON: nested too deeply{hint}") from None


def _message(document: dict) -> str:
    if "message" not in document:
        raise BadRequest(400, "'message' (or 'messages', for a batch) is required")
    message = document["message"]
    if not isinstance(message, str):
        raise BadRequest(400, f"'message' must be a string, got {_describe(message)}")
    return message


def _batch(document: dict, max_batch: int) -> tuple[str, ...]:
    if "message" in document:
        raise BadRequest(400, "give either 'message' or 'messages', not both")
    messages = document["messages"]
    if not isinstance(messages, list):
        raise BadRequest(400, f"'messages' must be a list of strings, got {_describe(messages)}")
    if not messages:
        raise BadRequest(400, "'messages' must hold at least one message")
    if len(messages) > max_batch:
        raise BadRequest(413, f"'messages' holds {len(messages)} messages, more than the "
                              f"{max_batch} of MAX_BATCH_MESSAGES")
    for index, message in enumerate(messages):
        if not isinstance(message, str):
            raise BadRequest(400, f"'messages'[{index}] must be a string, got {_describe(message)}")
    return tuple(messages)


def _timeout(value: object) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float) or (type(value) is float and not math.isfinite(value)):
        raise BadRequest(400, f"'timeout' must be a number of seconds, got {_describe(value)}")
    # Compared as it is: an integer of 400 digits is too large, not an overflow.
    if not 0 < value <= MAX_TIMEOUT_S:
        raise BadRequest(400, f"'timeout' must be more than 0 and at most {MAX_TIMEOUT_S} seconds")
    return float(value)


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return {int: "an integer", float: "a number", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__
    )
