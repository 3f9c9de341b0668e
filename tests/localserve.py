"""A resident panel for the local socket's tests: ``python tests/localserve.py ROOT
[TURNS]`` serves ROOT's local socket (:func:`mgrhooks.http.local.serve_local`) with a real
:class:`mgrhooks.api.Panel` behind it, prints ``ready`` and runs until SIGTERM. With
TURNS, at most that many calls run at once, and a call that gets no turn within half a
second is :class:`Busy`, as ``mgrhooks serve``'s resident does.

The resident here is the smallest real one (each call in a worker thread:
``Panel.call`` then ``render_bytes``, as ``exec`` prints it); ``mgrhooks serve``'s own
(``mgrhooks.http.resident``) keeps more warm, with the same interface.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from mgrhooks.api import Panel
from mgrhooks.dispatch import Options
from mgrhooks.http.local import serve_local
from mgrhooks.http.resident import Call
from mgrhooks.process import Processes
from mgrhooks.render import render_bytes


class Answer(NamedTuple):
    body: bytes
    content_type: str
    error: bool


class Busy(Exception):
    """No turn: nothing ran."""


class PanelResident:
    """Answers a call as ``mgrhooks exec --out FMT`` would print it."""

    def __init__(self, panel: Panel, turns: int) -> None:
        self.panel = panel
        self.turns = asyncio.Semaphore(turns)
        #: a thread for every call at once: a nested call must never wait for its ancestors' threads
        self.pool = ThreadPoolExecutor(64)

    async def answer(self, call: Call, /) -> Answer:
        try:
            await asyncio.wait_for(self.turns.acquire(), 0.5)
        except TimeoutError:
            raise Busy() from None
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self._answer, call)
        finally:
            self.turns.release()

    def _answer(self, call: Call) -> Answer:
        options = Options(timeout=call.timeout, depth=call.depth, chain=call.chain, processes=Processes(seal=True))
        with options.processes, self.panel.logging():
            response = self.panel.call(
                call.func, call.params, user=call.user, level=call.level, lang=call.lang, options=options
            )
            doc = None if response.serialised is not None else response.doc
            body = render_bytes(doc, call.out, (("func", call.func), *call.params), response.serialised)
        return Answer(body, "text/plain; charset=utf-8", response.error)

    async def reload(self) -> None:
        self.panel = Panel(self.panel.root.path, self.panel.root.mgr)


async def main(root: str, turns: int) -> None:
    resident = PanelResident(Panel(root), turns)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    local = serve_local(resident.panel.root, resident, reload=resident.reload, busy=(Busy,), max_request=1 << 20)
    async with local:
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 64))
