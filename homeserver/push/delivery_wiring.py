"""Wiring of push evaluation and delivery into the `HomeServer` (kept here so that
`homeserver.py` only calls in)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from homeserver.ip_ranges import IPRangeFilter
from homeserver.push.actions import PushActions
from homeserver.push.gateway import PusherService
from storage.push_actions import PushActionStore
from storage.pushers import PusherStore

if TYPE_CHECKING:
    from homeserver.homeserver import HomeServer


def wire_push_delivery(hs: HomeServer) -> None:
    """Must run before the sync listener is registered: the counts a woken sync reads
    are written by this listener first."""
    hs.push_actions = PushActions(hs, PushActionStore(hs.db))
    push = hs.config.push
    ip_filter = IPRangeFilter(push.ip_range_blocklist, push.ip_range_allowlist)
    hs.pusher = PusherService(hs, PusherStore(hs.db), push.gateway_timeout_seconds, ip_filter)
    if hs.config.push.enabled:
        hs.room_events.listeners.append(hs.push_actions.on_event)
        hs.account_data.listeners.append(hs.push_actions.on_account_data)
    hs.devices.deleted_listeners.append(hs.pusher.devices_deleted)
    tasks: set[asyncio.Task[None]] = set()

    def user_changed(user_id: str) -> None:
        # Called for any account change; only deactivation matters here.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(_drop_if_deactivated(hs, user_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    hs.accounts.user_changed.append(user_changed)


async def _drop_if_deactivated(hs: HomeServer, user_id: str) -> None:
    user = await hs.accounts.get_user(user_id)
    if user is not None and user.deactivated:
        await hs.pusher.user_deactivated(user_id)


async def start_push_delivery(hs: HomeServer) -> None:
    """After migrations: pushers of accounts deactivated while the server was down
    go; the others resume delivery from their stored positions."""
    for pusher in await hs.pusher.store.all():
        user = await hs.accounts.get_user(pusher.user_id)
        if user is None or user.deactivated:
            await hs.pusher.store.delete_for_user(pusher.user_id)
    if hs.config.push.enabled:
        await hs.pusher.start()


async def stop_push_delivery(hs: HomeServer) -> None:
    await hs.pusher.stop()
