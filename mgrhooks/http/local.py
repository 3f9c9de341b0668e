"""The local socket of ``mgrhooks serve``: ``sbin/mgrctl`` and ``mgrhooks exec`` of the
same root run their calls in the resident panel instead of a new Python (issue 12, item 5).

Where (docs/local.md; our choice): ``var/run/mgrhooks.sock`` of the
root (:data:`mgrhooks.client.SOCKET`), in a directory of mode 700 owned by the root
directory's owner, the socket itself mode 600: only root and that owner can connect.
The peer's uid (``SO_PEERCRED``) is checked again on every connection: root (uid 0) or
the owner of the root directory acts as the super user; anyone else gets a refusal
(exit status 77, ``ExitStatus.REFUSED``) and nothing runs.

What (the wire: :mod:`mgrhooks.client`): a ``mgrctl`` request carries the command line,
which :func:`mgrhooks.mgrctlcli.parse_mgrctl` parses with the ``mgrctl`` command itself; a
``call`` request carries a call ``exec`` parsed. Each becomes a :class:`Call` for the
resident (``user`` root at level 30 for mgrctl; ``exec``'s ``--user``/``--level``, as in
its own process), one deeper than the call whose handler made it
(:func:`mgrhooks.dispatch.nesting` of the client's ``MGRHOOKS_DEPTH``/``MGRHOOKS_CHAIN``),
so :data:`~mgrhooks.dispatch.MAX_DEPTH` holds across served and in-process calls. What the
socket does not serve (help, usage errors, ``-i``, another root or product) is answered
"fallback": the client runs it in its own process, where it prints what it always did.

Bounds: a request of at most :data:`~mgrhooks.client.MAX_REQUEST` bytes, read within
:data:`READ_TIMEOUT` seconds of the connection (a slow peer is dropped); the answer is
the response document as ``exec --out FMT`` prints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import NamedTuple, Protocol

from .. import client, logs
from ..dispatch import nesting
from ..errors import ExitStatus, MgrhooksError, RootError
from ..model import Level
from ..printable import printable
from ..render import FORMATS
from ..root import Root
from ..settings import MAX_SECONDS
from .resident import Call

#: seconds a peer has, from its connection, to send its whole request
READ_TIMEOUT = 10.0

_log = logging.getLogger("mgrhooks.local")


class AnswerLike(Protocol):
    """What the resident answers (``mgrhooks.http.resident.Answer``): the rendered
    document, exactly what ``exec --out FMT`` prints, and whether it holds an ``<error>``."""

    @property
    def body(self) -> bytes: ...
    @property
    def error(self) -> bool: ...


class ResidentLike(Protocol):
    """The resident panel of one root (``mgrhooks.http.resident.Resident``)."""

    async def answer(self, call: Call, /) -> AnswerLike: ...


class Reply(NamedTuple):
    """What the client prints: ``stdout`` and ``stderr``, and its exit status;
    ``fallback``: nothing ran, the client runs the command in its own process."""

    status: int
    stderr: str = ""
    stdout: bytes = b""
    fallback: bool = False


#: the answer to a command line the socket does not serve
FALLBACK = Reply(0, fallback=True)


class Restart(NamedTuple):
    """``mgrctl exit`` / ``mgrctl -R``: ``asked`` is which."""

    asked: str


class BadRequest(ValueError):
    """A request frame that is not what :mod:`mgrhooks.client` sends."""


# --- requests to calls (no I/O but resolving the root a request names) --------------------


def peer_refusal(uid: int, owner: int, root: Path) -> str | None:
    """Why a peer of ``uid`` may not use the socket of ``root`` (owned by ``owner``), or
    ``None``: root and the owner act as the super user (issue 12; our reading: the panel's
    mgrctl is root's)."""
    if uid in (0, owner):
        return None
    return (
        f"mgrhooks: the resident panel of {root} refuses uid {uid}: only root and the root's "
        f"owner (uid {owner}) may call it through {client.SOCKET}"
    )


def decided(request: Mapping[str, object], root: Root) -> Call | Restart | Reply:
    """What to do with a decoded request: a call for the resident, a restart, or a reply
    without running anything (fallback). :raises BadRequest: a malformed request"""
    environ = _strings(request.get("env"), "env")
    cwd = _string(request.get("cwd"), "cwd")
    depth, chain = nesting(environ)
    kind = request.get("kind")
    if kind == "mgrctl":
        from ..mgrctlcli import parse_mgrctl

        argv = request.get("argv")
        if not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv):
            raise BadRequest("'argv' must be a list of strings")
        line = parse_mgrctl(argv, environ, cwd)
        if line is None or line.mgr != root.mgr or not _same_root(line.root, root):
            return FALLBACK
        if line.restart is not None:
            return Restart(line.restart)
        if line.listing or line.func is None:
            return FALLBACK
        return Call(line.func, line.params, "root", Level.SUPER_USER, "en", line.fmt, {}, depth, chain)
    if kind == "call":
        given = Path(cwd, _string(request.get("root"), "root"))
        if _string(request.get("mgr"), "mgr") != root.mgr or not _same_root(given, root):
            return FALLBACK
        return Call(
            _string(request.get("func"), "func"),
            _params(request.get("params")),
            _string(request.get("user"), "user"),
            _level(request.get("level")),
            _string(request.get("lang"), "lang"),
            _out(request.get("out")),
            {},
            depth,
            chain,
            _timeout(request.get("timeout")),
        )
    raise BadRequest(f"unknown kind {kind!r}")


def _same_root(path: Path, root: Root) -> bool:
    try:
        return path.resolve() == root.path
    except (OSError, RuntimeError):  # a loop of links
        return False


def _string(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{name!r} must be a string")
    return value


def _strings(value: object, name: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequest(f"{name!r} must be an object of strings")
    return {str(k): v for k, v in value.items()}


def _params(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise BadRequest("'params' must be a list of [key, value] pairs")
    pairs = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)):
            raise BadRequest("'params' must be a list of [key, value] pairs")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _level(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 31:
        raise BadRequest("'level' must be a number 0-31")
    return value


def _out(value: object) -> str:
    if value not in FORMATS:
        raise BadRequest(f"'out' must be one of {', '.join(FORMATS)}")
    return str(value)


def _timeout(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= MAX_SECONDS:
        raise BadRequest(f"'timeout' must be seconds above 0, at most {MAX_SECONDS:g}")
    return float(value)


def frames(reply: Reply) -> bytes:
    """The answer frame of ``reply`` and its standard output (see :mod:`mgrhooks.client`)."""
    header = client.encode(
        {"status": reply.status, "stderr": reply.stderr, "fallback": reply.fallback, "length": len(reply.stdout)}
    )
    return len(header).to_bytes(4, "big") + header + reply.stdout


def _said(message: str) -> str:
    """``message`` as the CLI writes it on stderr (escaped, one line)."""
    return printable(message) + "\n"


# --- I/O: the server -------------------------------------------------------------------------


class _Local(NamedTuple):
    root: Root
    resident: ResidentLike
    reload: Callable[[], Awaitable[None]] | None
    busy: tuple[type[Exception], ...]
    read_timeout: float
    max_request: int


@contextlib.asynccontextmanager
async def serve_local(
    root: Root,
    resident: ResidentLike,
    *,
    reload: Callable[[], Awaitable[None]] | None = None,
    busy: tuple[type[Exception], ...] = (),
    read_timeout: float = READ_TIMEOUT,
    max_request: int = client.MAX_REQUEST,
) -> AsyncIterator[asyncio.AbstractServer | None]:
    """Serve the local socket of ``root`` in the running event loop meanwhile (``async
    with serve_local(root, resident) as server: ...``); the socket file is removed at the
    end. A stale socket left by a killed serve is replaced. Where another serve of the root
    answers on it already (one serving HTTPS, one a unix socket for nginx), this one has
    none (``server`` is ``None``), which the panel log says (a warning).

    :param reload: what ``mgrctl exit`` / ``mgrctl -R`` run (drop the resident's caches);
        ``None``: nothing to reload, which they are told
    :param busy: what ``resident.answer`` raises when it ran nothing for want of a turn
        (``resident.Busy``): the client runs the call in-process then. A nested call
        waiting for a turn its ancestors hold would wait for ever; this way it waits at
        most the resident's queue time
    :param read_timeout: seconds a peer has to send its request
    :param max_request: the largest request frame read (bytes); a larger one is refused
    :raises RootError: ``var/run`` is not a directory of ours (a link, a file), or the
        socket cannot be made
    """
    try:
        path = _prepared_path(root)
    except _Taken as exc:
        await asyncio.to_thread(_log_panel, root, logs.WARNING, f"{exc}: this serve has no local socket")
        yield None
        return
    local = _Local(root, resident, reload, busy, read_timeout, max_request)
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with client.reachable(str(path)) as address:
            listening.bind(address)
        os.chmod(path, 0o600)
        _chown_to_owner(root, path)
        server = await asyncio.start_unix_server(lambda r, w: _connection(local, r, w), sock=listening)
    except OSError as exc:
        listening.close()
        raise RootError(f"cannot serve the local socket {path}: {exc.strerror or exc}") from None
    identity = os.stat(path)
    try:
        async with server:
            yield server
    finally:
        with contextlib.suppress(OSError):
            now = os.stat(path)
            if (now.st_dev, now.st_ino) == (identity.st_dev, identity.st_ino):  # not a later serve's
                os.unlink(path)


class _Taken(Exception):
    """Another serve answers on the root's local socket."""


def _prepared_path(root: Root) -> Path:
    """``var/run`` made (mode 700, the root's owner's) and the socket's path, with a stale
    socket there removed. :raises RootError: see :func:`serve_local` :raises _Taken: another
    serve answers there"""
    folder = root.path / client.SOCKET
    path, folder = folder, folder.parent
    try:
        folder.parent.mkdir(mode=0o750, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # (a file or a link there: refused below)
            folder.mkdir(mode=0o700)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode):
            raise RootError(f"{folder} is not a directory (a link or a file): the local socket is not served")
        os.chmod(folder, 0o700)
        _chown_to_owner(root, folder)
    except OSError as exc:
        raise RootError(f"cannot make {folder}: {exc.strerror or exc}") from None
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise RootError(f"{path} is not a socket: remove it to serve the local socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with client.reachable(str(path)) as address:
                probe.connect(address)
        except OSError:  # nobody listening: a killed serve's
            os.unlink(path)
        else:
            raise _Taken(f"another mgrhooks serve answers on {path}")
        finally:
            probe.close()
    return path


def _chown_to_owner(root: Root, path: Path) -> None:
    """Give ``path`` to the root directory's owner (when we run as root and they differ)."""
    owner = os.stat(root.path)
    if os.geteuid() == 0 and owner.st_uid != 0:
        os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


async def _connection(local: _Local, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request, one answer, then the connection is closed."""
    try:
        reply = await _reply(local, reader, writer)
        if reply is not None:
            writer.write(frames(reply))
            await writer.drain()
    except (ConnectionError, OSError):  # the client went away: the call ran all the same
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def _reply(local: _Local, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Reply | None:
    """The reply to the peer's request; ``None``: it sent none in time (drop it)."""
    peer = writer.get_extra_info("socket")
    _, uid, _ = struct.unpack("3i", peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    refusal = peer_refusal(uid, os.stat(local.root.path).st_uid, local.root.path)
    if refusal is not None:
        await asyncio.to_thread(_log_panel, local.root, logs.WARNING, refusal)
        return Reply(ExitStatus.REFUSED, _said(refusal))
    try:
        async with asyncio.timeout(local.read_timeout):
            size = int.from_bytes(await reader.readexactly(4), "big")
            if size > local.max_request:
                message = f"mgrhooks: a request of {size} bytes is over the local socket's limit of {local.max_request}"
                return Reply(ExitStatus.USAGE, _said(message))
            data = await reader.readexactly(size)
    except (TimeoutError, asyncio.IncompleteReadError):
        return None
    try:
        what = decided(client.decode(data), local.root)
    except (BadRequest, ValueError) as exc:
        return Reply(ExitStatus.USAGE, _said(f"mgrhooks: a malformed request on the local socket: {exc}"))
    if isinstance(what, Reply):
        return what
    if isinstance(what, Restart):
        return await _restart(local, what)
    return await _answer(local, what)


async def _answer(local: _Local, call: Call) -> Reply:
    """Run ``call`` in the resident; errors as the CLI reports them (``mgrhooks.cli._Handled``)."""
    try:
        answer = await local.resident.answer(call)
    except local.busy:  # nothing ran
        return FALLBACK
    except MgrhooksError as exc:
        return Reply(exc.exit_status, _said(f"Error: {exc}"))
    except Exception as exc:
        _log.exception("local call %s failed", call.func)
        return Reply(ExitStatus.INTERNAL, _said(f"mgrhooks: internal error: {type(exc).__name__}: {exc}"))
    return Reply(ExitStatus.ERROR if answer.error else ExitStatus.OK, stdout=answer.body)


#: what ``mgrctl exit`` and ``mgrctl -R`` say when a serve reloaded
RELOADED = "mgrctl: the resident panel (mgrhooks serve, pid {pid}) reloaded"
#: ... and when the serve has nothing to reload
NOTHING_TO_RELOAD = (
    "mgrctl: the resident panel (mgrhooks serve, pid {pid}) reads plugin descriptions and addons anew "
    "on every call, so they are in force already (nothing to reload)"
)


async def _restart(local: _Local, restart: Restart) -> Reply:
    """``mgrctl exit`` / ``-R``: the reload hook, said on stderr and in the panel's log; a
    reload that fails (:class:`MgrhooksError`) is reported as a call's error is."""
    if local.reload is not None:
        try:
            await local.reload()
        except MgrhooksError as exc:  # (a broken etc/mgrhooks.conf: nothing changed)
            message = f"mgrctl {restart.asked}: resident panel (pid {os.getpid()}): not reloaded: {exc}"
            await asyncio.to_thread(_log_panel, local.root, logs.ERROR, message)
            return Reply(exc.exit_status, _said(f"Error: {exc}"))
        said, logged = RELOADED, "reloaded"
    else:
        said, logged = NOTHING_TO_RELOAD, "nothing to reload"
    message = f"mgrctl {restart.asked}: resident panel (pid {os.getpid()}): {logged}"
    await asyncio.to_thread(_log_panel, local.root, logs.INFO, message)
    return Reply(ExitStatus.OK, said.format(pid=os.getpid()) + "\n")


def _log_panel(root: Root, level: int, message: str) -> None:
    """One ``action`` record in the root's panel log (blocking: a file written)."""
    with root.logging():
        logs.ACTION.log(level, "%s", message)
