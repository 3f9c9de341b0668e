"""Finding and vetting a handler's program in ``addon/`` (PROTOCOL §7). I/O.

A program is refused unless it is a regular, executable file inside ``addon/`` (no
absolute name, no ``..`` or symlink leading out), not writable by group or others, not
set-user-ID or set-group-ID, and believed by :mod:`mgrhooks.trust` (owned by root or the
root's owner, and so is each folder up to the root, none writable by group or others).
A script whose ``#!`` line names an interpreter that is missing or cannot be run (or, through
``/usr/bin/env``, a command not found in ``PATH``) is refused naming the interpreter: the
system's own error (ENOENT) would name the script.
Readable or runnable by others is a warning (the vendor asks for mode 750 or 700).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import NamedTuple

from . import trust
from .env import DEFAULT_PATH


class Program(NamedTuple):
    """The verdict on one handler name: ``path`` is set only when it may run."""

    name: str
    shown: str
    #: the program's absolute path
    path: str | None
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def inspect(addon_dir: str | Path, name: str, path: str | None = None) -> Program:
    """Resolve handler ``name`` inside ``addon_dir`` and check it.

    Messages follow the panel's log wording (``Addon 'addon/x' is not executable``).

    :param path: the ``PATH`` a ``#!/usr/bin/env NAME`` line is looked up in: the
        handler's (``$PATH`` of this process, else :data:`mgrhooks.env.DEFAULT_PATH`)
    """
    return Inspector(addon_dir, path).inspect(name)


class Inspector:
    """Checks the programs of one call (:meth:`inspect`, as :func:`inspect`), sharing what
    they have in common: the folders up to ``addon/`` are walked once and looked at again
    with a ``stat`` each for every program, walked again when one changed
    (:class:`mgrhooks.trust.Folder`: a change between two programs is seen as before), and
    each ``#!`` line found runnable is not judged again (an interpreter that vanishes
    between two programs of a call fails the run as the system reports it, naming the
    script; one refused is judged again, as an earlier handler may have installed it).
    Bench row "per handler | slope ratio": the check was ~0.1 ms of our CPU a handler.

    :param path: as :func:`inspect`'s
    """

    def __init__(self, addon_dir: str | Path, path: str | None = None) -> None:
        self.addon_dir = str(addon_dir).rstrip("/") or "/"
        self.path = path
        self._root, self._name = os.path.split(self.addon_dir)
        self._folder = trust.Folder(self._root, self._name)
        self._good: set[bytes] = set()  # #! lines found runnable (a refused one is judged again)

    def inspect(self, name: str) -> Program:
        """Resolve handler ``name`` inside ``addon/`` and check it (see :func:`inspect`)."""
        folder = self._name
        shown = f"{folder}/{name}"
        if name.startswith("/") or ".." in name.split("/"):
            return Program(name, shown, None, (f"Addon '{name}' must be a file name inside {folder}/",))
        candidate = f"{self.addon_dir}/{name}"  # (os.path.join's result: neither ends nor starts with /)
        try:
            info = os.lstat(candidate)
        except OSError as exc:
            return _unreachable(name, shown, exc)
        real = candidate
        plain = "/" not in name and not stat.S_ISLNK(info.st_mode)  # the common case needs no more
        if not plain:
            try:
                real = os.path.realpath(candidate, strict=True)
                info = os.stat(real)
            except OSError as exc:
                return _unreachable(name, shown, exc)
            if not Path(real).is_relative_to(os.path.realpath(self.addon_dir)):
                return Program(name, shown, None, (f"Addon '{shown}' leads outside {folder}/ (to {real})",))
        errors, warnings = _mode_problems(shown, info)
        errors += self._trust_problems(name, shown, info, plain)
        if not errors:
            errors += self._interpreter_problems(real, shown)
        return Program(name, shown, None if errors else real, tuple(errors), tuple(warnings))

    def _trust_problems(self, name: str, shown: str, info: os.stat_result, plain: bool) -> list[str]:
        """The program's owner, set-ID bits and folders (:mod:`mgrhooks.trust`; ``info`` is the
        program's ``stat``; ``plain``: a file right in ``addon/``, not a link)."""
        errors = []
        if info.st_mode & (stat.S_ISUID | stat.S_ISGID):
            errors.append(f"Addon '{shown}' is set-user-ID or set-group-ID (mode {stat.S_IMODE(info.st_mode):o})")
        try:  # a file right in addon/ is reached through addon/'s folders; else it is walked to
            if plain:
                examined, in_folders = self._folder.judged()
            else:
                examined = trust.examine(self._root, f"{self._name}/{name}")
                in_folders = examined.folder_finding()
        except OSError as exc:  # changed since it was looked at: say so rather than run it
            return [*errors, f"Addon '{shown}' cannot be looked at: {exc.strerror}"]
        owner = examined.owner_problem(info)
        found = f"it {owner}" if owner is not None else in_folders
        if found is not None:
            errors.append(f"Addon '{shown}' is not trusted: {found}; {trust.RULE}")
        return errors

    def _interpreter_problems(self, program: str, shown: str) -> list[str]:
        """The interpreter a script's ``#!`` line names, when the kernel could not run it
        (``interpreter '/usr/bin/python' is missing, needed by 'addon/samba.py'``); for
        ``/usr/bin/env NAME``, also NAME when it is not found in ``path``. A relative
        interpreter is taken from the root (the handler's working directory). A program that
        is no script, or cannot be read, is left to the system. Each ``#!`` line is judged
        runnable once a call (the scripts of a call mostly share theirs); a line refused is
        judged again at the next program, as an earlier handler may have installed its
        interpreter."""
        head = _head(program)
        if not head.startswith(b"#!"):
            return []
        line = head[2:].split(b"\n", 1)[0]
        if line in self._good:
            return []
        problem = self._line_problem(os.fsdecode(line).lstrip(" \t"))
        if problem is None:
            self._good.add(line)
            return []
        return [f"{problem[0]}{shown}{problem[1]}"]

    def _line_problem(self, line: str) -> tuple[str, str] | None:
        """What is wrong with a ``#!`` line (without ``#!``), as the text before and after
        the program's name in the message; ``None``: nothing."""
        interpreter, _, argument = line.partition(" ")
        interpreter, argument = interpreter.partition("\t")[0], argument.strip(" \t")
        if interpreter.endswith("\r") or argument.endswith("\r"):
            return "the #! line of '", f"' ends in a carriage return (Windows line ends): it names {line!r}"
        problem = _not_runnable(os.path.join(self._root, interpreter))
        if problem is not None:
            return f"interpreter '{interpreter}' {problem}, needed by '", "' (its #! line)"
        command = argument.split(" ", 1)[0] if argument else ""
        if os.path.basename(interpreter) == "env" and command and not command.startswith("-") and "=" not in command:
            search = self.path if self.path is not None else os.environ.get("PATH", DEFAULT_PATH)
            if "/" in command:
                problem = _not_runnable(os.path.join(self._root, command))
            elif _which(command, search) is None:
                problem = f"is not found in PATH ({search})"
            if problem is not None:
                return f"interpreter '{command}' {problem}, needed by '", f"' (its #! line: {line})"
        return None


def _which(command: str, path: str) -> str | None:
    """:func:`shutil.which` (imported here: with the bz2 and lzma modules it pulls in, ~2.5
    ms of every call with a handler whose ``#!`` line names no ``env``; bench row "per
    handler | 1 handlers")."""
    import shutil

    return shutil.which(command, path=path)


def _unreachable(name: str, shown: str, exc: OSError) -> Program:
    """A program that cannot be found: the panel's ``does not exist`` when it is missing,
    else the system's reason (no permission on ``addon/``, a symlink loop)."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return Program(name, shown, None, (f"Addon '{shown}' does not exist",))
    return Program(name, shown, None, (f"Addon '{shown}' cannot be looked at: {exc.strerror}",))


def _mode_problems(shown: str, info: os.stat_result) -> tuple[list[str], list[str]]:
    if not stat.S_ISREG(info.st_mode):
        return [f"Addon '{shown}' is not a regular file"], []
    errors = []
    if not info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        errors.append(f"Addon '{shown}' is not executable")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        errors.append(f"Addon '{shown}' is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})")
    warnings = []
    if info.st_mode & (stat.S_IROTH | stat.S_IXOTH):
        mode = f"{stat.S_IMODE(info.st_mode):o}"
        warnings.append(f"Addon '{shown}' may be read or run by others (mode {mode}; 750 advised)")
    return errors, warnings


#: how much of a program is read for its ``#!`` line (Linux reads 256 bytes: BINPRM_BUF_SIZE)
SHEBANG_BYTES = 256


def _head(program: str) -> bytes:
    """The first :data:`SHEBANG_BYTES` of ``program``; ``b""`` when it cannot be read."""
    try:
        fd = os.open(program, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # (a FIFO put there since: no wait)
    except OSError:
        return b""
    try:
        return os.read(fd, SHEBANG_BYTES)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _not_runnable(program: str) -> str | None:
    """Why the kernel could not run ``program`` as an interpreter, else ``None``."""
    try:
        info = os.stat(program)
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be looked at ({exc.strerror})"
    if not stat.S_ISREG(info.st_mode) or not os.access(program, os.X_OK):
        return "is not an executable file"
    return None
