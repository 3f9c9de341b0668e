"""Whose files mgrhooks believes: sshd's StrictModes rule, applied to a root. I/O.

mgrhooks runs handler programs with its own rights (root's, on a panel) and takes plugin
descriptions, core documents, ``etc/mgrhooks.conf`` and ``etc/mgrhooks.disabled`` as the
operator's word. Like sshd with ``StrictModes yes`` (OpenSSH's ``safe_path()`` in
``misc.c``, ``auth_secure_path()`` in older ``auth.c``: the file and each folder of its
canonical path up to the home directory must be owned by root or the user and have no
group or other write bit), it believes such a file only when

* the file is owned by root or by the root directory's owner and is not writable by group
  or others, and
* every folder its path passes through from the root directory down is owned and
  writable the same way (who can write a folder can replace what is in it).

The path is followed one name at a time, links included, so a folder reached through a
link is checked where it really is: a symlinked ``etc/xml`` pointing to ``/srv/x/xml``
passes through ``/``, ``/srv``, ``/srv/x`` and ``/srv/x/xml``, and one pointing into
``/tmp`` (mode 1777) is not believed, as sshd would not. The walk starts at the root
directory itself: the folders holding it are not checked on the way to it (our choice,
as sshd stops at the home directory: they are the system's), only when a link leads
through one. Group write is refused even for a group of one, as sshd does.

Annotations are evaluated, not postponed: see :mod:`mgrhooks.model` (every call of a root
with plugin files defines this module's two records).
"""

import errno
import os
import stat
from collections.abc import Iterable
from typing import NamedTuple

from .model import Problem, Severity, Source

#: links followed on one path before giving up, as Linux's own path walk (ELOOP)
MAX_LINKS = 40


#: the rule, as messages end with it
RULE = (
    "what mgrhooks runs or reads, and each folder up to the root, must be owned by root or the"
    " root's owner and writable by no one else (sshd's StrictModes rule)"
)


class Finding(NamedTuple):
    """Why a path is not believed: which file or folder, shown relative to the root when
    inside it, and what is wrong with it (``"folder addon/ is writable by group or others
    (mode 777)"``)."""

    kind: str
    shown: str
    problem: str

    def __str__(self) -> str:
        return f"{self.kind} {self.shown} {self.problem}"


class Examined(NamedTuple):
    """A path followed from a root: ``real`` its real path, ``info`` the ``lstat`` of what
    it names (never a link), ``folders`` each folder a name was looked up in, in order,
    with its ``stat``."""

    root: str
    root_uid: int
    real: str
    info: os.stat_result
    folders: tuple[tuple[str, os.stat_result], ...]

    def owner_problem(self, info: os.stat_result | None = None) -> str | None:
        """What is wrong with the owner of ``info`` (default: the file's), or ``None``."""
        uid = (info or self.info).st_uid
        if uid in (0, self.root_uid):
            return None
        owner = "" if self.root_uid == 0 else f" ({_user(self.root_uid)})"
        return f"is owned by {_user(uid)}, not by root or the root's owner{owner}"

    def file_finding(self) -> Finding | None:
        """The file's own owner or mode problem, or ``None``."""
        return _finding(self, "folder" if stat.S_ISDIR(self.info.st_mode) else "file", self.real, self.info)

    def folder_finding(self) -> Finding | None:
        """The first folder, from the root down, that is not believed, or ``None``."""
        for path, info in self.folders:
            found = _finding(self, "folder", path, info)
            if found is not None:
                return found
        return None


def _finding(examined: Examined, kind: str, path: str, info: os.stat_result) -> Finding | None:
    problem = examined.owner_problem(info)
    if problem is None and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    if problem is None:
        return None
    return Finding(kind, _shown(examined.root, path, kind == "folder"), problem)


def _shown(root: str, path: str, folder: bool) -> str:
    """``path`` relative to ``root`` when inside it (the root itself by its full path)."""
    inside = path.startswith(root + "/")
    shown = path[len(root) + 1 :] if inside else path
    return shown + "/" if folder and not shown.endswith("/") else shown


def _user(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def examine(root: str, relative: str) -> Examined:
    """Follow ``relative`` from ``root`` (a real path: no link in it) one name at a time.

    :raises OSError: a name is missing (``ENOENT``), a middle one is not a folder
        (``ENOTDIR``), a folder cannot be searched (``EACCES``), or links loop (``ELOOP``)
    """
    return _walk(root, os.stat(root), relative)


def _walk(root: str, root_info: os.stat_result, relative: str) -> Examined:
    current, info = root, root_info
    folders: dict[str, os.stat_result] = {}
    pending = _names(relative)
    links = 0
    while pending:
        name = pending.pop()
        if name == "..":
            current = os.path.dirname(current)
            info = os.stat(current)
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), current)
        folders.setdefault(current, info)
        path = os.path.join(current, name)
        entry = os.lstat(path)
        if stat.S_ISLNK(entry.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(path)
            if target.startswith("/"):
                current, info = "/", os.stat("/")
            pending += _names(target)
            continue
        current, info = path, entry
    return Examined(root, root_info.st_uid, current, info, tuple(folders.items()))


def _names(path: str) -> list[str]:
    """The names of ``path`` as a stack (the first on top)."""
    return [name for name in reversed(path.split("/")) if name and name != "."]


class Folder:
    """The folders a file in folder ``relative`` of ``root`` is reached through, judged for
    many files: the programs a call runs, all in ``addon/``.

    A folder reached through no link is followed again by a ``stat`` of each folder of its
    path, no more, while each is still the folder (not a link) with the owner and mode it
    had: a new walk would then reach the same verdict from the same facts. Anything else
    (a link on the way, a changed owner or mode, a folder replaced by a link) is walked
    anew, as :func:`examine` does. So a change between two files' checks is seen as before,
    at two ``stat`` calls a file instead of a walk (bench row "per handler | slope ratio":
    ~0.1 ms of our CPU a handler was the program check, the walk most of it).
    """

    def __init__(self, root: str, relative: str) -> None:
        self.root, self.relative = root, relative
        names = relative.split("/")
        #: the path of each folder from the root down, when no link is on the way
        self._literal = [root, *(os.path.join(root, *names[: end + 1]) for end in range(len(names)))]
        self._looked: tuple[tuple[int, int], ...] | None = None  # (mode, uid) of each, while valid
        self._judged: tuple[Examined, Finding | None] | None = None

    def judged(self) -> tuple[Examined, Finding | None]:
        """The folder examined (:func:`examine`; ``folders`` the folders from the root down,
        then the folder itself), and the first of them not believed, or ``None``.
        :raises OSError: as :func:`examine`"""
        if self._judged is not None and self._looked is not None and self._looked == self._look():
            return self._judged
        walked = examine(self.root, self.relative)
        examined = walked._replace(folders=(*walked.folders, (walked.real, walked.info)))
        paths = [path for path, _ in examined.folders]
        # no link on the way (each name was the folder it names): stat-ing the same paths tells a change
        self._looked = tuple((i.st_mode, i.st_uid) for _, i in examined.folders) if paths == self._literal else None
        self._judged = examined, examined.folder_finding()
        return self._judged

    def _look(self) -> tuple[tuple[int, int], ...] | None:
        """The ``(mode, uid)`` of each folder of the path now (``None``: one cannot be looked at)."""
        try:
            first = os.stat(self.root)  # as examine(): the root itself is a real path
            rest = [os.lstat(path) for path in self._literal[1:]]
        except OSError:
            return None
        return ((first.st_mode, first.st_uid), *((info.st_mode, info.st_uid) for info in rest))


class Examiner:
    """Examines many paths of one root, each folder once (a root's thousand plugin files
    are in two folders: following each file's path anew cost 20 ms a call)."""

    def __init__(self, root: str) -> None:
        """:raises OSError: ``root`` cannot be looked at"""
        self.root = root
        self._root_info = os.stat(root)
        self._folders: dict[str, Examined] = {}
        #: real folder → its own problem; relative folder → the problem of a file in it
        self._verdicts: dict[str, Finding | None] = {}
        self._in_folder: dict[str, Finding | None] = {}

    def examine(self, relative: str) -> Examined:
        """As :func:`examine`. :raises OSError: as :func:`examine`"""
        head, _, name = relative.rpartition("/")
        if name in ("", ".", ".."):
            return _walk(self.root, self._root_info, relative)
        folder = self._folders.get(head)
        if folder is None:
            folder = self._folders[head] = _walk(self.root, self._root_info, head)
        path = os.path.join(folder.real, name)
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            return _walk(self.root, self._root_info, relative)
        return folder._replace(real=path, info=info, folders=(*folder.folders, (folder.real, folder.info)))

    def finding(self, examined: Examined) -> Finding | None:
        """The file's own problem, else the first folder's from the root down, else
        ``None``; each folder judged once."""
        found = examined.file_finding()
        for path, info in examined.folders:
            if found is not None:
                break
            if path not in self._verdicts:
                self._verdicts[path] = _finding(examined, "folder", path, info)
            found = self._verdicts[path]
        return found

    def survey(self, files: Iterable[tuple[str, str]]) -> tuple[dict[str, str], dict[str, os.stat_result]]:
        """Judge many files of a few folders, one ``lstat`` a file (a root's thousand
        plugin files: a :meth:`examine` each cost 8 ms a call).

        :param files: ``(relative, path)`` pairs: the file relative to the root, and its path
        :returns: why each file not believed is not (relative → refusal, as
            :meth:`refusal`), and the ``stat`` of each file looked at (path → ``stat``)
        """
        refused: dict[str, str] = {}
        infos: dict[str, os.stat_result] = {}
        owners = (0, self._root_info.st_uid)
        for relative, path in files:
            try:
                info = os.lstat(path)
                plain = not stat.S_ISLNK(info.st_mode) and info.st_uid in owners and not info.st_mode & 0o022
                examined = None if plain else self.examine(relative)
                folder = self._folder_verdict(relative.rpartition("/")[0]) if plain else None
            except OSError:
                continue  # gone, or cannot be looked at: its reader says so
            if examined is not None:
                info = examined.info
                found = self.finding(examined)
            else:
                found = folder
            infos[path] = info
            if found is not None:
                refused[relative] = f"{found}; {RULE}"
        return refused, infos

    def _folder_verdict(self, relative: str) -> Finding | None:
        """The finding for the folders of a file in folder ``relative`` (the folder included).
        :raises OSError: the folder cannot be followed"""
        if relative not in self._in_folder:
            folder = self._folders.get(relative)
            if folder is None:
                folder = self._folders[relative] = _walk(self.root, self._root_info, relative)
            self._in_folder[relative] = self.finding(folder)
        return self._in_folder[relative]

    def refusal(self, relative: str) -> str | None:
        """Why the file at ``relative`` is not believed (the finding and :data:`RULE`), or
        ``None``: also when it cannot be followed (its reader reports that)."""
        try:
            found = self.finding(self.examine(relative))
        except OSError:
            return None
        return None if found is None else f"{found}; {RULE}"


def refusal(root: str, relative: str) -> str | None:
    """Why the file at ``relative`` in ``root`` is not believed, or ``None``."""
    try:
        return Examiner(root).refusal(relative)
    except OSError:  # the root itself cannot be looked at
        return None


#: the folders of a root that hold what mgrhooks believes (``{mgr}``: the product), and
#: its files other than plugin files and programs (which their own checks cover)
FOLDERS = ("", "etc", "etc/xml", "etc/core", "etc/core/{mgr}", "addon")
FILES = ("etc/mgrhooks.conf", "etc/mgrhooks.disabled", "etc/debug.conf")


def audit(root: str, mgr: str) -> list[Problem]:
    """Every folder of :data:`FOLDERS`, file of :data:`FILES` and core document
    (``etc/core/<mgr>/*.xml``, ``etc/core/<mgr>/<func>/*.xml``) of ``root`` that exists and
    is not believed, as errors
    for ``mgrhooks check``; a problem shared by several (a folder they are all in) once."""
    try:
        examiner = Examiner(root)
    except OSError:
        return []
    wanted = [folder.format(mgr=mgr) for folder in FOLDERS] + list(FILES)
    wanted += [f"etc/core/{mgr}/{name}" for name in _core_documents(os.path.join(root, "etc/core", mgr))]
    problems: dict[str, Problem] = {}
    for relative in wanted:
        try:
            found = examiner.finding(examiner.examine(relative))
        except OSError:
            continue
        if found is not None and str(found) not in problems:
            problems[str(found)] = Problem(Severity.ERROR, Source(found.shown), f"not trusted: {found}; {RULE}")
    return list(problems.values())


def _core_documents(folder: str) -> list[str]:
    """The core documents under ``folder`` (``etc/core/<mgr>``), relative to it: ``*.xml``
    and, in each subfolder (one function's documents for one object each), its ``*.xml``."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    found = []
    for name in names:
        if name.endswith(".xml"):
            found.append(name)
        elif os.path.isdir(os.path.join(folder, name)):
            try:
                found += [f"{name}/{n}" for n in sorted(os.listdir(os.path.join(folder, name))) if n.endswith(".xml")]
            except OSError:
                continue
    return found
