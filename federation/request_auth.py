"""Signed federation requests: the `Authorization: X-Matrix ...` header (spec:
Server-Server API, "Request Authentication").

The signature covers the canonical JSON of method, URI (path and query as sent),
origin, destination and, when there is one, the JSON body.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from signedjson.types import SigningKey, VerifyKey

from homeserver.events import SignatureError, key_id_of, sign_json, verify_json


class XMatrix(msgspec.Struct, frozen=True):
    origin: str
    destination: str | None
    key_id: str
    signature: str


class AuthHeaderError(ValueError):
    pass


def request_json(method: str, uri: str, origin: str, destination: str, content: Any | None) -> dict[str, Any]:
    signed: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        signed["content"] = content
    return signed


def authorization_header(
    method: str, uri: str, origin: str, destination: str, content: Any | None, signing_key: SigningKey
) -> str:
    signed = sign_json(request_json(method, uri, origin, destination, content), origin, signing_key)
    key_id = key_id_of(signing_key)
    signature = signed["signatures"][origin][key_id]
    return f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id}",sig="{signature}"'


_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)')


def parse_authorization(header: str) -> XMatrix:
    scheme, _, rest = header.partition(" ")
    if scheme != "X-Matrix":
        raise AuthHeaderError("not an X-Matrix authorization header")
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            raise AuthHeaderError("malformed X-Matrix parameters")
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = value.replace('\\"', '"').replace("\\\\", "\\")
        position = match.end()
    try:
        return XMatrix(params["origin"], params.get("destination"), params["key"], params["sig"])
    except KeyError as missing:
        raise AuthHeaderError(f"X-Matrix header lacks {missing.args[0]}") from None


def verify_request(
    auth: XMatrix, method: str, uri: str, destination: str, content: Any | None, verify_key: VerifyKey
) -> None:
    """Raise SignatureError unless `auth` is a valid signature of this request."""
    if auth.destination is not None and auth.destination != destination:
        raise SignatureError("request was meant for another server")
    signed = request_json(method, uri, auth.origin, destination, content)
    signed["signatures"] = {auth.origin: {auth.key_id: auth.signature}}
    verify_json(signed, auth.origin, {auth.key_id: verify_key})
