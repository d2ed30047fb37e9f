"""A hand-driven federation peer for hostile-input tests: it publishes a signing key
over TLS like a real server, and the test signs whatever PDUs and requests it likes.
It can also hold rooms (`PeerRoom`) whose graph the test fills with honest and forged
events, and serve them to a joining server: make_join, send_join, /backfill,
/state_ids, /event (and accept /send)."""

from __future__ import annotations

import asyncio
import heapq
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from signedjson.types import SigningKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from federation.keys import server_keys_response
from federation.request_auth import authorization_header
from homeserver.config_generate import write_self_signed_certificate
from homeserver.events import (
    build_event,
    compute_event_id,
    generate_signing_key,
    get_room_version,
    select_auth_event_ids,
)
from tests.server import ServerProcess, free_port

StateKey = tuple[str, str]


class FakePeer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.server_name = f"localhost:{self.port}"
        self.signing_key = generate_signing_key("a_fake")
        cert, key = directory / "peer.crt", directory / "peer.key"
        write_self_signed_certificate(cert, key, "localhost")

        async def keys(request: Request) -> JSONResponse:
            return JSONResponse(server_keys_response(self.server_name, self.signing_key, int(time.time() * 1000)))

        # Rooms the peer holds (see PeerRoom), served to whoever asks.
        self.rooms: dict[str, PeerRoom] = {}
        # PDUs other servers sent us with PUT /send, in arrival order.
        self.received_pdus: list[dict[str, Any]] = []
        # Paths of the room requests served (make_join ... /event), in order.
        self.served: list[str] = []
        # Off by default, so a gap cannot be filled (tests of the fallback).
        self.serves_missing_events = False
        app = Starlette(routes=[Route("/_matrix/key/v2/server", keys), *self._room_routes()])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def request(self, method: str, destination: str, port: int, path: str, content: Any | None = None) -> httpx.Response:
        header = authorization_header(method, path, self.server_name, destination, content, self.signing_key)
        return httpx.request(
            method, f"https://127.0.0.1:{port}{path}", json=content, headers={"Authorization": header}, verify=False, timeout=30
        )

    def send_transaction(self, server: ServerProcess, txn_id: str, pdus: list[dict[str, Any]]) -> httpx.Response:
        """PUT /send/{txnId} to one of our servers (federation enabled)."""
        assert server.federation_port is not None
        body = {"origin": self.server_name, "origin_server_ts": 1, "pdus": pdus, "edus": []}
        return self.request("PUT", server.server_name, server.federation_port, f"/_matrix/federation/v1/send/{txn_id}", body)

    def sign_event(self, room_version: str, template: dict[str, Any], **changes: Any) -> tuple[str, dict[str, Any]]:
        fields = {**template, **changes}
        return build_event(
            get_room_version(room_version),
            room_id=fields["room_id"],
            sender=fields["sender"],
            event_type=fields["type"],
            state_key=fields.get("state_key"),
            content=fields["content"],
            prev_event_ids=fields["prev_events"],
            auth_event_ids=fields["auth_events"],
            depth=fields["depth"],
            origin_server_ts=int(time.time() * 1000),
            server_name=self.server_name,
            signing_key=self.signing_key,
        )

    # --- serving rooms -------------------------------------------------------------------
    # No request authentication: the peer is hostile, not careful.

    def new_room(self, version: str = "10", creator: str = "creator") -> PeerRoom:
        room = PeerRoom(self, version, self.user(creator))
        self.rooms[room.room_id] = room
        return room

    def public_room(self, version: str = "10") -> tuple[PeerRoom, str]:
        """A room anyone may join, its creator (power 100) joined: (room, creator)."""
        room = self.new_room(version)
        creator = self.user("creator")
        room.send(creator, "m.room.member", {"membership": "join"}, state_key=creator)
        room.send(creator, "m.room.power_levels", {"users": {creator: 100}}, state_key="")
        room.send(creator, "m.room.join_rules", {"join_rule": "public"}, state_key="")
        return room, creator

    def _room_routes(self) -> list[Route]:
        fed = "/_matrix/federation"

        def room_of(request: Request) -> PeerRoom | None:
            self.served.append(request.url.path)
            return self.rooms.get(request.path_params["room_id"])

        def unknown() -> JSONResponse:
            return JSONResponse({"errcode": "M_NOT_FOUND", "error": "Unknown room"}, status_code=404)

        def pdus_body(pdus: list[dict[str, Any]]) -> dict[str, Any]:
            return {"origin": self.server_name, "origin_server_ts": int(time.time() * 1000), "pdus": pdus}

        async def make_join(request: Request) -> JSONResponse:
            room = room_of(request)
            if room is None:
                return unknown()
            user_id = request.path_params["user_id"]
            content = {"membership": "join"}
            template = {
                "type": "m.room.member",
                "state_key": user_id,
                "sender": user_id,
                "room_id": room.room_id,
                "content": content,
                "origin_server_ts": int(time.time() * 1000),
                "depth": room.next_depth(),
                "prev_events": list(room.tips),
                "auth_events": select_auth_event_ids(room.version, "m.room.member", user_id, user_id, content, room.state),
            }
            return JSONResponse({"room_version": room.version.identifier, "event": template})

        async def send_join(request: Request) -> JSONResponse:
            room = room_of(request)
            if room is None:
                return unknown()
            pdu = await request.json()
            state_before = room.state_before(pdu.get("prev_events", []))
            event_id = room.record(pdu)
            state = [room.events[i] for i in state_before.values()]
            chain = room.auth_chain([*state_before.values(), *pdu.get("auth_events", [])])
            return JSONResponse(
                {
                    "origin": self.server_name,
                    "members_omitted": False,
                    "servers_in_room": sorted({self.server_name, pdu["sender"].split(":", 1)[1]}),
                    "state": state,
                    "auth_chain": [room.events[i] for i in chain if i not in state_before.values()],
                    "event": room.events[event_id],
                }
            )

        async def backfill(request: Request) -> JSONResponse:
            room = room_of(request)
            if room is None:
                return unknown()
            limit = int(request.query_params.get("limit", "10"))
            return JSONResponse(pdus_body(room.backfill(request.query_params.getlist("v"), limit)))

        async def get_missing_events(request: Request) -> JSONResponse:
            room = room_of(request)
            if room is None or not self.serves_missing_events:
                return unknown()
            body = await request.json()
            events = room.missing_events(body["earliest_events"], body["latest_events"], int(body.get("limit", 10)))
            return JSONResponse({"events": events})

        async def state_ids(request: Request) -> JSONResponse:
            room = room_of(request)
            event_id = request.query_params.get("event_id", "")
            if room is None or event_id not in room.events:
                return unknown()
            state = room.state_before(room.events[event_id].get("prev_events", []))
            ids = [*state.values(), *room.extra_state_ids]
            return JSONResponse({"pdu_ids": ids, "auth_chain_ids": room.auth_chain(ids)})

        async def event(request: Request) -> JSONResponse:
            self.served.append(request.url.path)
            for room in self.rooms.values():
                pdu = room.events.get(request.path_params["event_id"])
                if pdu is not None:
                    return JSONResponse(pdus_body([pdu]))
            return JSONResponse({"errcode": "M_NOT_FOUND", "error": "Unknown event"}, status_code=404)

        async def send(request: Request) -> JSONResponse:
            body = await request.json()
            pdus = body.get("pdus", []) if isinstance(body, dict) else []
            self.received_pdus.extend(p for p in pdus if isinstance(p, dict))
            return JSONResponse({"pdus": {}})

        return [
            Route(f"{fed}/v1/make_join/{{room_id}}/{{user_id}}", make_join, methods=["GET"]),
            Route(f"{fed}/v2/send_join/{{room_id}}/{{event_id}}", send_join, methods=["PUT"]),
            Route(f"{fed}/v1/backfill/{{room_id}}", backfill, methods=["GET"]),
            Route(f"{fed}/v1/state_ids/{{room_id}}", state_ids, methods=["GET"]),
            Route(f"{fed}/v1/get_missing_events/{{room_id}}", get_missing_events, methods=["POST"]),
            Route(f"{fed}/v1/event/{{event_id}}", event, methods=["GET"]),
            Route(f"{fed}/v1/send/{{txn_id}}", send, methods=["PUT"]),
        ]


class PeerRoom:
    """A room held by the fake peer: an event graph it signs itself (`send`) into
    which the test can put any PDU it likes (`insert`: forged, tampered, failing
    auth), served by make_join/send_join, /backfill, /state_ids and /event."""

    def __init__(self, peer: FakePeer, version: str, creator: str) -> None:
        self.peer = peer
        self.version = get_room_version(version)
        self.room_id = f"!{secrets.token_hex(8)}:{peer.server_name}"
        self.events: dict[str, dict[str, Any]] = {}
        self.state_after: dict[str, dict[StateKey, str]] = {}
        # The state at the tips, as honest events change it.
        self.state: dict[StateKey, str] = {}
        self.tips: list[str] = []
        # Event IDs /state_ids adds to every answer (e.g. a forged state event).
        self.extra_state_ids: list[str] = []
        self.send(creator, "m.room.create", {"room_version": version}, state_key="")

    def next_depth(self, prev_events: list[str] | None = None) -> int:
        prev = self.tips if prev_events is None else prev_events
        return max((int(self.events[p]["depth"]) for p in prev), default=0) + 1

    def state_before(self, prev_events: list[str]) -> dict[StateKey, str]:
        state: dict[StateKey, str] = {}
        for prev in prev_events:
            state.update(self.state_after.get(prev, {}))
        return state

    def send(
        self,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        prev_events: list[str] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """An honest event, recorded as the new tip (a state event updates the state)."""
        event_id, pdu = self.build(sender, event_type, content, state_key=state_key, prev_events=prev_events)
        self.record(pdu)
        return event_id, pdu

    def build(
        self,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        prev_events: list[str] | None = None,
        signing_key: SigningKey | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Build and sign an event on the tips (or `prev_events`) with auth events
        from the current state, signed by the peer (with `signing_key` if given);
        not recorded (see `record`, `insert`)."""
        prev = list(self.tips if prev_events is None else prev_events)
        is_create = event_type == "m.room.create"
        event_id, pdu = build_event(
            self.version,
            room_id=self.room_id,
            sender=sender,
            event_type=event_type,
            state_key=state_key,
            content=content,
            prev_event_ids=prev,
            auth_event_ids=[] if is_create else select_auth_event_ids(
                self.version, event_type, state_key, sender, content, self.state
            ),
            depth=self.next_depth(prev),
            origin_server_ts=int(time.time() * 1000),
            server_name=self.peer.server_name,
            signing_key=signing_key or self.peer.signing_key,
        )
        return event_id, pdu

    def record(self, pdu: dict[str, Any]) -> str:
        """An event that joins the room's graph as a new tip (a join sent to us)."""
        event_id = compute_event_id(self.version, pdu)
        self.events[event_id] = pdu
        state = self.state_before(pdu.get("prev_events", []))
        if isinstance(pdu.get("state_key"), str):
            state[(pdu["type"], pdu["state_key"])] = event_id
        self.state_after[event_id] = state
        self.state = dict(state)
        self.tips = [event_id]
        return event_id

    def insert(self, pdu: dict[str, Any], event_id: str | None = None) -> str:
        """Put any PDU into the graph as it stands (not a tip, no effect on state):
        served as it is by /backfill and /event. `event_id` for a PDU whose
        content was changed after it was hashed (its ID no longer matches)."""
        event_id = event_id or compute_event_id(self.version, pdu)
        self.events[event_id] = pdu
        self.state_after[event_id] = self.state_before(pdu.get("prev_events", []))
        return event_id

    def auth_chain(self, event_ids: list[str]) -> list[str]:
        seen: set[str] = set()
        frontier = list(event_ids)
        while frontier:
            event_id = frontier.pop()
            pdu = self.events.get(event_id)
            if pdu is None:
                continue
            for auth_id in pdu.get("auth_events", []):
                if auth_id not in seen:
                    seen.add(auth_id)
                    frontier.append(auth_id)
        return sorted(seen)

    def missing_events(self, earliest: list[str], latest: list[str], limit: int) -> list[dict[str, Any]]:
        """What /get_missing_events answers, as Synapse does: a walk back from the
        prev_events of `latest`, never into `earliest`, at most 20 events, oldest
        first."""
        seen = set(earliest) | set(latest)
        frontier = [p for i in latest if i in self.events for p in self.events[i].get("prev_events", [])]
        found: list[str] = []
        while frontier and len(found) < min(limit, 20):
            event_id = frontier.pop(0)
            if event_id in seen or event_id not in self.events:
                continue
            seen.add(event_id)
            found.append(event_id)
            frontier.extend(self.events[event_id].get("prev_events", []))
        return [self.events[i] for i in sorted(found, key=lambda i: int(self.events[i]["depth"]))]

    def backfill(self, from_ids: list[str], limit: int) -> list[dict[str, Any]]:
        """The events at and before `from_ids`, newest (deepest) first, as servers
        answer /backfill."""
        heap = [(-int(self.events[i]["depth"]), i) for i in set(from_ids) if i in self.events]
        heapq.heapify(heap)
        seen = {i for _, i in heap}
        out: list[dict[str, Any]] = []
        while heap and len(out) < limit:
            _, event_id = heapq.heappop(heap)
            pdu = self.events[event_id]
            out.append(pdu)
            for prev in pdu.get("prev_events", []):
                if prev in self.events and prev not in seen:
                    seen.add(prev)
                    heapq.heappush(heap, (-int(self.events[prev]["depth"]), prev))
        return out
