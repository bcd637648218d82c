"""AsyncClient: the Client's surface on asyncio.

Every method of the synchronous objects is a coroutine here, run in a worker thread
(asyncio.to_thread) so the event loop never blocks on the daemon; handles (Sandbox, Session,
Process, Files, …) come back wrapped the same way, streams as async iterators, and context
managers as async ones::

    async with AsyncClient() as client:
        async with client.sandbox() as sb:
            res = await sb.exec("echo hi")
            async for ev in await sb.exec_stream("seq 3"):
                ...
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable, Generator, Optional

from . import client as _sync

_HANDLES = (_sync.Client, _sync.Sandbox, _sync.Session, _sync.Files, _sync.Processes, _sync.Process, _sync.Ports,
            _sync.CodeContext, _sync.Terminal, _sync.ExecStream, _sync.Feed, _sync.LogStream, _sync.Snapshots, _sync.Fork)
_DONE = object()


def _wrap(v: Any) -> Any:
    if isinstance(v, _HANDLES) or isinstance(v, Generator):
        return AsyncHandle(v)
    if isinstance(v, list):
        return [_wrap(x) for x in v]
    return v


class _Call:
    """A pending call: await it for its result, or ``async with`` it to enter the result."""

    def __init__(self, fn: Callable[..., Any], args: Any, kw: Any) -> None:
        self._fn, self._args, self._kw = fn, args, kw
        self._entered: Optional[AsyncHandle] = None

    async def _run(self) -> Any:
        return _wrap(await asyncio.to_thread(self._fn, *self._args, **self._kw))

    def __await__(self) -> Generator[Any, None, Any]:
        return self._run().__await__()

    async def __aenter__(self) -> Any:
        self._entered = await self._run()
        return self._entered

    async def __aexit__(self, *exc: Any) -> None:
        if self._entered is not None:
            await self._entered.__aexit__(*exc)


class AsyncHandle:
    """An SDK object seen from asyncio: its methods return awaitables; its data attributes as they are."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        v = getattr(self._target, name)
        if callable(v):
            def call(*args: Any, **kw: Any) -> _Call:
                return _Call(v, args, kw)
            call.__doc__ = v.__doc__
            return call
        return _wrap(v)

    def __repr__(self) -> str:
        return f"Async{self._target!r}"

    async def __aenter__(self) -> "AsyncHandle":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self._target.__exit__, *exc)

    async def __aiter__(self) -> AsyncIterator[Any]:
        it = iter(self._target)
        try:
            while True:
                item = await asyncio.to_thread(next, it, _DONE)
                if item is _DONE:
                    return
                yield item
        finally:
            close: Optional[Callable[[], Awaitable[Any]]] = getattr(self._target, "close", None)  # type: ignore[assignment]
            if close is not None:
                await asyncio.to_thread(close)


class AsyncClient(AsyncHandle):
    """Client (same arguments, same methods) with every call awaitable."""

    def __init__(self, host: Optional[str] = None, token: Optional[str] = None, ca: Optional[str] = None,
                 timeout: Optional[float] = None) -> None:
        super().__init__(_sync.Client(host, token, ca, timeout))
