"""Network faults on loopback: a TCP proxy between a client and its server that can cut or slow
the path on command, as toxiproxy does, in one asyncio thread of this process.

The drill puts one in front of the broker (an agent's path: the broker advertises the proxy's port
on a listener of its own, so every connection of that agent goes through it) and one in front of
the gateway's upstream model server.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Literal

Mode = Literal["pass", "reset", "blackhole"]


class FaultProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`, byte for byte, until told otherwise.

    Modes: `pass` forwards; `reset` aborts every open connection and resets new ones at once
    (a host whose route is gone: clients see errors and reconnect); `blackhole` accepts
    connections and forwards nothing either way (a partition: clients see time-outs). `slow`
    delays every chunk the server sends back by `latency_s`."""

    def __init__(self, target_port: int, *, port: int = 0, name: str = "proxy") -> None:
        self.host = "127.0.0.1"
        self.target_port = target_port
        self.name = name
        self.mode: Mode = "pass"
        self.latency_s = 0.0
        self.stats: Counter[str] = Counter()
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._open: set[asyncio.StreamWriter] = set()  # both ends of every live connection

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"{self.host}:{self._port}"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, self.host, self._port)
                )
                self._port = self._server.sockets[0].getsockname()[1]
            except OSError as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fault-proxy-{self.name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise OSError(f"{self.name} proxy could not listen on port {self._port}: {failure[0]}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ---------------------------------------------------------------------------------
    def cut(self, mode: Literal["reset", "blackhole"] = "reset") -> None:
        """Take the path down: open connections are aborted, new ones get `mode`."""
        self._run(self._set(mode, abort=True))

    def slow(self, latency_s: float) -> None:
        """Delay each chunk the server sends back by `latency_s` (0 restores the speed)."""
        self.latency_s = latency_s

    def restore(self) -> None:
        """Forward again. Connections held by a blackhole are aborted, as a router that comes
        back drops the state of flows it lost, and clients reconnect."""
        was = self.mode
        self.latency_s = 0.0
        self._run(self._set("pass", abort=was == "blackhole"))

    async def _set(self, mode: Mode, *, abort: bool) -> None:
        self.mode = mode
        if abort:
            for writer in list(self._open):
                writer.transport.abort()
                self.stats["aborted"] += 1
            self._open.clear()

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None:
            raise RuntimeError(f"{self.name} proxy is not started")
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- forwarding -----------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["accepted"] += 1
        if self.mode == "reset":
            self.stats["reset"] += 1
            writer.transport.abort()
            return
        self._open.add(writer)
        if self.mode == "blackhole":
            self.stats["held"] += 1
            await self._drain_forever(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            self.stats["upstream_refused"] += 1
            self._open.discard(writer)
            writer.transport.abort()
            return
        self._open.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer, "bytes_up", delay=lambda: 0.0),
            self._pipe(up_reader, writer, "bytes_down", delay=lambda: self.latency_s),
        )
        for end in (writer, up_writer):
            self._open.discard(end)
            end.transport.abort()

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        counter: str,
        delay: Callable[[], float],
    ) -> None:
        try:
            while data := await source.read(65536):
                if self.mode == "blackhole":
                    continue  # swallowed: nothing crosses a partition
                if (wait := delay()) > 0:
                    await asyncio.sleep(wait)
                self.stats[counter] += len(data)  # before the write: a reader never sees more
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.transport.abort()  # one side is gone: so is the other (Kafka, HTTP reconnect)

    @staticmethod
    async def _drain_forever(reader: asyncio.StreamReader) -> None:
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._set(self.mode, abort=True)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
