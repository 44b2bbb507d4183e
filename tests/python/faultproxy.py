"""A TCP fault-injection proxy for tests: forwards connections to a target and, when told, delays,
stalls, cuts or resets them (stdlib only: one asyncio loop on one thread, ended by close())."""
from __future__ import annotations

import asyncio
import socket
import struct
import threading

DIRECTIONS = ("up", "down")  # up: from the client to the target; down: from the target to the client
_CHUNK = 64 * 1024


class FaultProxy:
    """Listens on 127.0.0.1 (a free port: `address`, `port`) and forwards each connection to `target`
    ('host:port'). Until told otherwise it forwards every byte as it comes. A fault holds for the
    connections open now and for those accepted later, until `resume()`:

    - `delay(seconds)`: each chunk read reaches the other side that much later, in both directions
      (a fixed latency; chunks stay in order and do not wait for each other's delays).
    - `stall()`: nothing more is forwarded and every socket stays open (a partition). The bytes wait
      in the proxy and the kernel's buffers and flow, in order, on `resume()` (the partition heals).
      With `discard=True` they are read and thrown away instead (a black hole; a connection that
      lost bytes is broken, so cut it before resuming).
    - `refuse()`: new connections are reset as soon as they are accepted (nothing listens there).
    Once, on the connections open now:
    - `cut()`: closes both sides at once (each peer sees end of file);
    - `reset()`: the same with a TCP reset (SO_LINGER 0);
    - `cut_after(nbytes, direction)`: forwards `nbytes` more bytes in `direction`, then cuts: a cut
      in the middle of a frame.
    `resume()` ends every fault: no delay, no stall, no refusal, no pending cut_after.
    `accepted` counts the connections accepted so far, `open_connections()` those open now."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._delay = 0.0
        self._discard = False
        self._refusing = False
        self._links: set[_Link] = set()
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._thread.start()
        self._server = self._on_loop(self._listen)
        self.port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    async def _listen(self):
        self._flowing = asyncio.Event()
        self._flowing.set()
        return await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, client_reader, client_writer):
        self.accepted += 1
        if self._refusing:
            _close(client_writer, reset=True)
            return
        try:
            target = await asyncio.open_connection(*self._target)
        except OSError:
            _close(client_writer, reset=True)
            return
        self._links.add(_Link(self, (client_reader, client_writer), target))

    # ---- faults (called from any thread; each has taken effect when it returns) ----

    def delay(self, seconds: float):
        self._on_loop(lambda: setattr(self, "_delay", float(seconds)))

    def stall(self, discard: bool = False):
        def apply():
            self._discard = discard
            self._flowing.clear()
        self._on_loop(apply)

    def refuse(self):
        self._on_loop(lambda: setattr(self, "_refusing", True))

    def cut(self):
        self._on_loop(lambda: self._close_links(reset=False))

    def reset(self):
        self._on_loop(lambda: self._close_links(reset=True))

    def _close_links(self, reset: bool):
        for link in list(self._links):
            link.close(reset)

    def cut_after(self, nbytes: int, direction: str):
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}")

        def apply():
            for link in self._links:
                link.budget[direction] = nbytes
        self._on_loop(apply)

    def resume(self):
        def apply():
            self._delay, self._discard, self._refusing = 0.0, False, False
            for link in self._links:
                link.budget = dict.fromkeys(DIRECTIONS)
            self._flowing.set()
        self._on_loop(apply)

    def open_connections(self) -> int:
        return self._on_loop(lambda: len(self._links))

    # ---- life ----

    def close(self):
        """Closes the listener and every connection, ends the proxy's tasks and joins its thread."""
        if self._loop.is_closed():
            return

        async def shutdown():
            self._server.close()
            self._close_links(reset=False)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _on_loop(self, function):
        """Runs `function` (plain, or async) on the proxy's loop and returns its result."""
        async def run():
            result = function()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)


class _Link:
    """One accepted connection and its connection to the target: a reader and a writer task per
    direction, joined by a queue of (due time, chunk); an empty chunk is the end of the stream."""

    def __init__(self, proxy: FaultProxy, client, target):
        self._proxy = proxy
        self._writers = (client[1], target[1])
        self.budget = dict.fromkeys(DIRECTIONS)  # bytes still to forward before a cut_after cut
        self.closed = False
        self._tasks = []
        for direction, reader, writer in (("up", client[0], target[1]), ("down", target[0], client[1])):
            # drain() then waits until the kernel has every byte, so a cut loses none already written.
            writer.transport.set_write_buffer_limits(high=0)
            queue = asyncio.Queue()
            self._tasks += [asyncio.ensure_future(self._read(reader, queue)),
                            asyncio.ensure_future(self._write(direction, writer, queue))]

    async def _read(self, reader, queue):
        proxy, loop = self._proxy, asyncio.get_running_loop()
        while True:
            try:
                chunk = await reader.read(_CHUNK)
            except OSError:
                chunk = b""
            if chunk and proxy._discard and not proxy._flowing.is_set():
                continue
            await proxy._flowing.wait()  # a stall holds the chunk here; the kernel holds the rest
            queue.put_nowait((loop.time() + proxy._delay, chunk))
            if not chunk:
                return

    async def _write(self, direction, writer, queue):
        proxy, loop = self._proxy, asyncio.get_running_loop()
        try:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                await proxy._flowing.wait()
                if not chunk:
                    break
                budget = self.budget[direction]
                if budget is not None and len(chunk) >= budget:
                    writer.write(chunk[:budget])
                    await writer.drain()
                    break
                if budget is not None:
                    self.budget[direction] = budget - len(chunk)
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        self.close(reset=False)

    def close(self, reset: bool):
        if self.closed:
            return
        self.closed = True
        self._proxy._links.discard(self)
        for writer in self._writers:
            _close(writer, reset)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()


def _close(writer, reset: bool):
    """Closes a connection at once: with a TCP reset, or with FIN (a reset follows if unread bytes
    were left in the proxy's socket, as the kernel does for any close)."""
    sock = writer.get_extra_info("socket")
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    writer.transport.abort()
