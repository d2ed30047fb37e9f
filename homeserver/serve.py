"""Running the server: uvicorn listeners for the client and federation APIs in one loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import ssl
import sys
import time

import uvicorn

from homeserver.app import build_app, build_federation_app
from homeserver.config import Config
from homeserver.homeserver import HomeServer
from homeserver.http_protocol import CoalescingHttpToolsProtocol

logger = logging.getLogger("homeserver")
_M_ARENA_MAX = -8  # glibc's mallopt() parameter number


class _Listener(uvicorn.Server):
    # We install one signal handler for all listeners ourselves.
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def,override]
        yield

    async def serve_quietly(self) -> None:
        # uvicorn raises SystemExit when it cannot bind (after logging why); in a task
        # that would tear through the event loop with a traceback.
        try:
            await self.serve()
        except SystemExit:
            pass


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _uvicorn_config(app: object, host: str, port: int, config: Config, **extra: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        lifespan="off",
        access_log=config.log_level == "DEBUG",
        log_config=None,
        loop="none",
        http=CoalescingHttpToolsProtocol,
        server_header=False,
        timeout_keep_alive=75,
        **extra,  # type: ignore[arg-type]
    )


async def serve(config: Config) -> None:
    started = time.monotonic()
    hs = HomeServer(config)
    await hs.start()
    if hs.federation is not None:
        await hs.federation.start()
    app = build_app(hs)
    # Everything made so far (modules, table definitions, compiled routes, caches
    # warmed at start) lives as long as the process: out of the collector's sight, a
    # full collection under load looks only at what requests made since. Without
    # this one was a 60 ms stop of the whole server every few thousand messages, the
    # slowest deliveries of a benchmark run. No gc.collect() first: it would add
    # ~20 ms to start-up to free a few hundred objects. (`homeserver run` starts with
    # the collector off; from here on it runs.)
    gc.freeze()
    gc.enable()
    listeners = [_Listener(_uvicorn_config(app, config.listeners.client.host, config.listeners.client.port, config))]
    federation = config.listeners.federation
    if federation is not None and config.federation.enabled:
        if not (federation.tls_certificate_path and federation.tls_private_key_path):
            raise SystemExit("config field 'listeners.federation': tls_certificate_path and tls_private_key_path are required")
        listeners.append(
            _Listener(
                _uvicorn_config(
                    build_federation_app(hs),
                    federation.host,
                    federation.port,
                    config,
                    ssl_certfile=str(config.path(federation.tls_certificate_path)),
                    ssl_keyfile=str(config.path(federation.tls_private_key_path)),
                    ssl_version=ssl.PROTOCOL_TLS_SERVER,
                )
            )
        )

    loop = asyncio.get_running_loop()

    def stop() -> None:
        hs.begin_shutdown()
        for listener in listeners:
            listener.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)

    tasks = [asyncio.create_task(listener.serve_quietly()) for listener in listeners]
    try:
        while not all(listener.started for listener in listeners):
            if any(task.done() for task in tasks):
                stop()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise SystemExit("error: could not start listening (is the port already in use?)")
            await asyncio.sleep(0.005)
        logger.info(
            "Homeserver %s ready in %.2fs. Client URL: %s",
            config.server_name,
            time.monotonic() - started,
            config.client_base_url,
        )
        print(
            f"Homeserver {config.server_name} is running. Point your Matrix client at {config.client_base_url}",
            flush=True,
        )
        await asyncio.gather(*tasks)
    finally:
        stop()
        await hs.stop()


def _raise_open_files_limit() -> None:
    """Every long-polling client holds a socket: let the process have as many as the
    system allows it (the soft limit is often 1,024, the hard one far higher)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        logger.warning("Could not raise the open files limit")


def _limit_malloc_arenas() -> None:
    """glibc gives every thread that allocates its own malloc arena; with the
    database worker threads that multiplies the memory a fragmented heap keeps.
    Two arenas cost nothing measurable in speed here and tens of MiB less RSS. Must
    run before any thread starts (MALLOC_ARENA_MAX in the environment wins)."""
    if sys.platform != "linux" or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass  # not glibc


def run(config: Config) -> None:
    _limit_malloc_arenas()
    _raise_open_files_limit()
    configure_logging(config.log_level)
    try:
        import uvloop

        uvloop.run(serve(config))
    except ImportError:
        asyncio.run(serve(config))
