"""Peak memory of the server while a 200 MB file goes up and comes back down.

Uploads are streamed to disk and downloads streamed from it, so the server's resident
memory should stay near its idle figure whatever the file size. This starts a real
server (tests/server.py), moves the file with httpx streaming on both sides (the
client never holds it whole either), and samples the server's /proc/<pid>/status:
VmRSS every few milliseconds and VmHWM (the kernel's own peak) at each phase.

    .venv/bin/python bench/media_memory.py [--size-mb 200]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server import ServerProcess  # noqa: E402

CHUNK = 1 << 20


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class RssSampler:
    """Highest VmRSS seen while running, sampled every 5 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def payload(size: int, digest: hashlib._Hash) -> Iterator[bytes]:
    # Random-looking but cheap: one random MiB, varied per chunk so nothing dedupes.
    block = os.urandom(CHUNK)
    sent = 0
    index = 0
    while sent < size:
        chunk = (index.to_bytes(8, "big") + block[8:])[: size - sent]
        digest.update(chunk)
        yield chunk
        sent += len(chunk)
        index += 1


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: "5" to clear_refs), so the kernel's peak
    covers only what follows; registration's password hashing peaks higher than idle."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def mib(kib: int) -> str:
    return f"{kib / 1024:7.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    args = parser.parse_args()
    size = args.size_mb * 1024 * 1024

    with tempfile.TemporaryDirectory() as directory:
        server = ServerProcess(Path(directory), {"limits": {"max_upload_bytes": size + CHUNK}, "log_level": "WARNING"})
        server.start()
        try:
            assert server.process is not None
            pid = server.process.pid
            with httpx.Client(base_url=server.base_url, timeout=300) as client:
                registered = client.post(
                    "/_matrix/client/v3/register",
                    json={"username": "bench", "password": "bench-password", "auth": {"type": "m.login.dummy"}},
                ).json()
                client.headers["Authorization"] = f"Bearer {registered['access_token']}"
                # Warm up every code path once, so imports and pools count as idle.
                warm = client.post("/_matrix/media/v3/upload", content=b"warm-up" * 1000).json()["content_uri"]
                client.get("/_matrix/client/v1/media/download/" + warm[len("mxc://") :]).raise_for_status()
                time.sleep(0.5)
                peak_was_reset = reset_peak(pid)
                idle_rss = status_kib(pid, "VmRSS")

                sent = hashlib.sha256()
                started = time.monotonic()
                with RssSampler(pid) as upload_sampler:
                    response = client.post(
                        "/_matrix/media/v3/upload",
                        params={"filename": "big.bin"},
                        content=payload(size, sent),
                        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                    )
                response.raise_for_status()
                upload_s = time.monotonic() - started
                uri = response.json()["content_uri"]
                upload_hwm = status_kib(pid, "VmHWM")

                received = hashlib.sha256()
                got = 0
                started = time.monotonic()
                with RssSampler(pid) as download_sampler:
                    with client.stream("GET", "/_matrix/client/v1/media/download/" + uri[len("mxc://") :]) as stream:
                        stream.raise_for_status()
                        for chunk in stream.iter_bytes(CHUNK):
                            received.update(chunk)
                            got += len(chunk)
                download_s = time.monotonic() - started
                final_hwm = status_kib(pid, "VmHWM")
        finally:
            server.stop()

    assert got == size and received.hexdigest() == sent.hexdigest(), "downloaded bytes differ from uploaded ones"
    print(f"file: {args.size_mb} MiB, uploaded in {upload_s:.2f}s, downloaded in {download_s:.2f}s, byte-exact")
    peak = max(upload_sampler.peak_kib, download_sampler.peak_kib, final_hwm if peak_was_reset else 0)
    hwm_note = "" if peak_was_reset else " (VmHWM could not be reset: includes start-up)"
    print(f"idle RSS                   {mib(idle_rss)}")
    print(f"peak RSS during upload     {mib(upload_sampler.peak_kib)}   VmHWM after upload   {mib(upload_hwm)}{hwm_note}")
    print(f"peak RSS during download   {mib(download_sampler.peak_kib)}   VmHWM after download {mib(final_hwm)}")
    print(f"peak - idle                {mib(peak - idle_rss)}   ({(peak - idle_rss) / 1024 / args.size_mb:.1%} of the file size)")


if __name__ == "__main__":
    main()
