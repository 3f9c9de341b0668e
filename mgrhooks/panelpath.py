"""The root at a fixed panel path (``--panel-path /usr/local/mgr5``), in a private mount
namespace, for addons that hard-code the panel's own path. Pure plan, I/O entry.

Public addons and modules name ``/usr/local/mgr5`` (``/usr/local/ispmgr`` in the old
generation) outright: ``/usr/local/mgr5/sbin/mgrctl``, ``os.chdir("/usr/local/mgr5")``,
``/usr/local/mgr5/include/php`` on PHP's include path. :func:`enter` makes this process
(and so every handler it starts afterwards, which inherits it) see the root at that path
as well, in a mount namespace of its own (``unshare(CLONE_NEWNS)``, mounts made private,
the root bind-mounted there), without changing anything the host sees. When the path
does not exist on the host, its nearest existing folder gets a ``tmpfs`` in the namespace
holding that folder's own entries (each bind-mounted back) and the missing folders.

It needs root, or (for another user) unprivileged user namespaces: the user then enters
a user namespace of its own first, its user and group mapped to themselves. Our choice
of design: the namespace is entered once, by the ``mgrhooks`` process before the call,
so handlers start, are timed, contained and killed exactly as without it (no program in
between, nothing per handler).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from .errors import RootError, UsageError

if TYPE_CHECKING:
    import ctypes

#: sched.h and sys/mount.h
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
#: what the error adds when the system refuses the namespace
NEEDS = (
    "a private mount namespace needs root, or unprivileged user namespaces"
    " (sysctl user.max_user_namespaces above 0, and kernel.unprivileged_userns_clone=1 where it exists)"
)


class Layout(NamedTuple):
    """How ``target`` (an absolute, normalised path) comes to be: ``anchor`` is the folder a
    ``tmpfs`` covers (``None`` when ``target`` exists already), ``missing`` the folders made
    under it, outermost first, ``target`` last."""

    target: str
    anchor: str | None = None
    missing: tuple[str, ...] = ()


def layout(panel_path: str, exists: Callable[[str], bool] = os.path.lexists) -> Layout:
    """The plan for ``panel_path``: nothing to make when it exists, else the nearest folder
    that exists and what is missing below it.

    :raises UsageError: the path is not absolute, is ``/``, or would need a ``tmpfs`` over
        ``/`` itself (its first folder is missing)
    """
    if not os.path.isabs(panel_path):
        raise UsageError(f"--panel-path {panel_path}: not an absolute path")
    target = os.path.normpath(panel_path)
    if target == "/" or target.startswith("//"):
        raise UsageError(f"--panel-path {panel_path}: cannot put the root at /")
    if exists(target):
        return Layout(target)
    missing = [target]
    anchor = os.path.dirname(target)
    while not exists(anchor):
        missing.insert(0, anchor)
        anchor = os.path.dirname(anchor)
    if anchor == "/":
        reason = "a folder is made only inside one that exists, other than /"
        raise UsageError(f"--panel-path {panel_path}: {missing[0]} does not exist ({reason})")
    return Layout(target, anchor, tuple(missing))


def enter(root: str | os.PathLike[str], panel_path: str) -> bool:
    """Make this process see ``root`` at ``panel_path`` too, in a private mount namespace
    (see the module's docstring); handlers started afterwards inherit it.

    Must be called while this process runs one thread. :returns: ``False`` when nothing
    was needed (the root already is at that path), ``True`` once done
    :raises UsageError: a path that cannot be used (:func:`layout`)
    :raises RootError: the system refused the namespace or a mount: the step, the
        system's reason and its errno name (``EPERM``), and what the namespace needs
    """
    plan = layout(panel_path)
    real = os.path.realpath(root)
    if plan.anchor is None and os.path.realpath(plan.target) == real:
        return False  # the root is there already (or a link to it is)
    libc = _libc()
    _unshare(libc, panel_path)
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, panel_path, "make the mounts private")
    if plan.anchor is not None:
        _cover(libc, plan, panel_path)
    _mount(libc, real, plan.target, None, MS_BIND | MS_REC, panel_path, f"bind {real} onto {plan.target}")
    return True


def _libc() -> ctypes.CDLL:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _unshare(libc: ctypes.CDLL, panel_path: str) -> None:
    """A mount namespace of our own; for a user other than root, inside a user namespace
    of its own with that user and group mapped to themselves."""
    import ctypes

    if libc.unshare(CLONE_NEWNS) == 0:
        return
    error = ctypes.get_errno()
    if error == errno.EPERM and os.geteuid() != 0:
        uid, gid = os.geteuid(), os.getegid()
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0:
            try:
                _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
                _write("/proc/self/setgroups", "deny\n")
                _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
            except OSError as exc:
                raise _refused(panel_path, "map the user into its namespace", exc.errno or 0) from None
            return
        error = ctypes.get_errno()
    raise _refused(panel_path, "make a private mount namespace", error)


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def _cover(libc: ctypes.CDLL, plan: Layout, panel_path: str) -> None:
    """A ``tmpfs`` over ``plan.anchor`` holding its own entries (each bind-mounted back
    from the folder under it, links copied) and ``plan.missing``."""
    anchor = plan.anchor
    assert anchor is not None
    fd = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        below = f"/proc/self/fd/{fd}"
        names = os.listdir(fd)
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        _mount(libc, "tmpfs", anchor, "tmpfs", 0, panel_path, f"put a tmpfs on {anchor}", f"mode={mode:o}")
        for name in names:
            source, here = f"{below}/{name}", os.path.join(anchor, name)
            info = os.lstat(source)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(source), here)
                continue
            if stat.S_ISDIR(info.st_mode):
                os.mkdir(here)
            else:
                os.close(os.open(here, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            _mount(libc, source, here, None, MS_BIND | MS_REC, panel_path, f"keep {here}")
        for folder in plan.missing:
            os.mkdir(folder, 0o755)
    finally:
        os.close(fd)


def _mount(
    libc: ctypes.CDLL,
    source: str | None,
    target: str,
    kind: str | None,
    flags: int,
    panel_path: str,
    step: str,
    data: str | None = None,
) -> None:
    import ctypes

    def encoded(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    result = libc.mount(encoded(source), encoded(target), encoded(kind), flags, encoded(data))
    if result != 0:
        raise _refused(panel_path, step, ctypes.get_errno())


def _refused(panel_path: str, step: str, error: int) -> RootError:
    name = errno.errorcode.get(error, str(error))
    reason = f"{os.strerror(error)} ({name})"
    hint = f"; {NEEDS}" if error in (errno.EPERM, errno.EACCES, errno.ENOSPC, errno.EINVAL) else ""
    return RootError(f"--panel-path {panel_path}: cannot {step}: {reason}{hint}")
