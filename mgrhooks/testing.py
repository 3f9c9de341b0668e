"""Testing addons: a fresh root laid out from an addon project, calls through the real
pipeline, and results to assert on by XPath. I/O. The pytest plugin
(:mod:`mgrhooks.pytest_plugin`) hands these out as fixtures; docs/testing.md shows them.

.. code-block:: python

    root = AddonRoot.lay_out(Path("my-addon"), tmp_path / "root")
    result = root.call("user.add", "name=alice", "passwd=x", sok="ok")
    result.assert_ok()
    result.assert_xpath("/doc/id", "alice")
    root.exec("user", "--out", "text").output     # the real command, in a subprocess
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ExitStatus, RootError
from .expect import ANY, absent, mismatch, select
from .model import Level
from .root import DEFAULT_MGR, init_root
from .xmldoc import Element, error_text, find_error, parse, serialise

if TYPE_CHECKING:
    from .api import Panel

#: what an addon project holds that a root is laid out from (our choice: what an addon's
#: install puts on a panel; ``var/`` is the panel's state and starts empty)
PROJECT_PARTS = ("addon", "etc")
#: what is never copied from the project
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


@dataclass(frozen=True)
class Result:
    """One call's outcome.

    :param func: the function called
    :param params: its parameters, in order
    :param out: the output format (``xml``, ``devel``, ``json``, ``sjson``, ``text``)
    :param status: the exit status ``exec`` gives it (0 no ``<error>``, 1 an ``<error>``;
        from :meth:`AddonRoot.exec`, whatever the command exited with)
    :param output: the response in format ``out``, as ``exec`` prints it
    :param stderr: what the command wrote on stderr (``""`` for :meth:`AddonRoot.call`)
    :param document: the response document as a tree (the whole ``<doc>``, interface
        parts included); ``None`` when the command's output is not XML
    """

    func: str
    params: tuple[tuple[str, str], ...]
    out: str
    status: int
    output: str
    stderr: str = ""
    document: Element | None = field(default=None, repr=False)

    @property
    def doc(self) -> Element:
        """The response tree. :raises AssertionError: the output was not XML (``--out
        json`` or ``text`` through :meth:`AddonRoot.exec`)"""
        if self.document is None:
            raise AssertionError(f"{self._called()}: output is {self.out}, not a document:\n{self.output}{self.stderr}")
        return self.document

    @cached_property
    def json(self) -> Any:  # noqa: ANN401 (whatever the JSON holds)
        """The output parsed as JSON (``out`` ``json`` or ``sjson``)."""
        import json

        return json.loads(self.output)

    @property
    def error(self) -> Element | None:
        """The response's ``<error>``, or ``None``."""
        return find_error(self.doc)

    def xpath(self, expression: str) -> Any:  # noqa: ANN401 (lxml's answer: nodes, a string, a number, a boolean)
        """What ``expression`` yields on the response document."""
        return select(self.doc, expression)

    def assert_xpath(self, expression: str, expected: object = ANY) -> None:
        """Assert on the response document by XPath (the forms of ``expected`` are in
        :mod:`mgrhooks.expect`: nothing, a text, an XML fragment, a number or boolean, a
        list of texts). :raises AssertionError: naming the call, the expression, the
        expected and the actual value, with the documents side by side"""
        __tracebackhide__ = True
        problem = mismatch(self.doc, expression, expected)
        if problem is not None:
            raise AssertionError(f"{self._called()}\n{problem}")

    def assert_no_xpath(self, expression: str) -> None:
        """Assert that ``expression`` selects nothing. :raises AssertionError: what it selects"""
        __tracebackhide__ = True
        problem = absent(self.doc, expression)
        if problem is not None:
            raise AssertionError(f"{self._called()}\n{problem}")

    def assert_doc(self, expected: str) -> None:
        """Assert the whole response document equals the XML ``expected`` (whitespace
        between elements and comments ignored; attributes in any order)."""
        __tracebackhide__ = True
        self.assert_xpath("/*", expected)

    def assert_ok(self) -> None:
        """Assert the response holds no ``<error>``. :raises AssertionError: the error"""
        __tracebackhide__ = True
        error = self.error
        if error is not None:
            raise AssertionError(f"{self._called()} answered an error: {_shown_error(error)}\n{_document(self.doc)}")

    def assert_error(self, type: str | None = None, object: str | None = None, value: str | None = None) -> Element:  # noqa: A002 (the attributes' names)
        """Assert the response holds an ``<error>`` (with this ``type``, ``object`` and
        ``value``, those given). :returns: the ``<error>`` element"""
        __tracebackhide__ = True
        error = self.error
        if error is None:
            raise AssertionError(f"{self._called()} answered no error\n{_document(self.doc)}")
        wanted = {"type": type, "object": object, "value": value}
        wrong = {k: v for k, v in wanted.items() if v is not None and error.get(k) != v}
        if wrong:
            expected = " ".join(f'{k}="{v}"' for k, v in wanted.items() if v is not None)
            raise AssertionError(f"{self._called()} answered {_shown_error(error)}, expected {expected}")
        return error

    def _called(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.params)
        return f"{self.func} {params}".rstrip()


def _shown_error(error: Element) -> str:
    attrs = " ".join(f'{k}="{v}"' for k, v in error.attrib.items())
    return f"<error {attrs}>: {error_text(error)}"


def _document(doc: Element) -> str:
    return "the response document:\n" + serialise(_copy(doc)).decode("utf-8")


def _copy(doc: Element) -> Element:
    import copy

    return copy.deepcopy(doc)  # serialise adjusts whitespace in place


class AddonRoot:
    """A fresh panel root holding an addon project's files, and calls on it.

    Build one with :meth:`lay_out`. ``panel`` is the :class:`~mgrhooks.api.Panel` that
    :meth:`call` uses (register observers or Python functions on it to test with them).
    """

    def __init__(self, path: Path, mgr: str = DEFAULT_MGR) -> None:
        self.path = path
        self.mgr = mgr
        self._documents = itertools.count(1)

    @classmethod
    def lay_out(cls, project: Path, path: Path, mgr: str = DEFAULT_MGR) -> AddonRoot:
        """A root at ``path`` (made; it must not exist) with the project's ``addon/`` and
        ``etc/`` (links followed, ``__pycache__`` and dot files left out), the rest of a
        root as ``mgrhooks init`` makes it (``var/`` empty, ``sbin/mgrctl`` running this
        Python), and every file and folder writable by no one but its owner, as
        :mod:`mgrhooks.trust` wants them. Modes are kept otherwise: a handler program
        the project does not make executable fails as it would on a panel.

        :raises RootError: the project has neither ``addon/`` nor ``etc/``
        """
        parts = [part for part in PROJECT_PARTS if (project / part).is_dir()]
        if not parts:
            raise RootError(f"{project}: no addon/ or etc/ to lay a root out from (set mgrhooks_project)")
        path.mkdir(parents=True)
        for part in parts:
            shutil.copytree(project / part, path / part, ignore=_IGNORED)
        init_root(path, sys.executable)
        for node in [path, *path.rglob("*")]:
            mode = node.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & (stat.S_IWGRP | stat.S_IWOTH):
                node.chmod(stat.S_IMODE(mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
        return cls(path, mgr)

    @cached_property
    def panel(self) -> Panel:
        """The panel on this root that :meth:`call` uses."""
        from .api import Panel

        return Panel(self.path, self.mgr)

    def call(
        self,
        func: str,
        *pairs: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        elid: str | None = None,
        plid: str | None = None,
        sok: str | None = None,
        user: str = "root",
        level: int = Level.SUPER_USER,
        lang: str = "en",
        out: str = "xml",
        core_doc: Path | str | bytes | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Call ``func`` in this process through the real pipeline (the
        :class:`~mgrhooks.api.Panel` API ``exec`` is built on), its log written to
        ``var/<mgr>.log``, final handlers run before it returns.

        :param pairs: ``key=value`` parameters as ``exec`` takes them; ``params``,
            ``elid``, ``plid``, ``sok`` come after them (a later value of a key wins)
        :param out: the format of :attr:`Result.output` (``exec --out``)
        :param core_doc: the main logic's result (``exec --core-doc``): a file, or the
            document itself as XML text
        :param timeout: seconds every handler may run (``exec --timeout``)
        :raises UsageError: ``func``, ``user`` or ``lang`` no call can take
        """
        from .dispatch import Options
        from .render import render

        given = params.items() if isinstance(params, Mapping) else params
        named = {"elid": elid, "plid": plid, "sok": sok}
        merged = dict(_pairs(pairs))
        merged.update(given)
        merged.update({k: v for k, v in named.items() if v is not None})
        merged.pop("func", None)
        request_params = tuple(merged.items())
        options = Options(timeout=timeout, core_doc=self._core_doc_file(core_doc))
        with self.panel.logging():
            response = self.panel.call(func, request_params, user=user, level=level, lang=lang, options=options)
        doc = response.doc
        output = render(doc, out, (("func", func), *request_params))
        status = ExitStatus.ERROR if response.error else ExitStatus.OK
        return Result(func, request_params, out, int(status), output, "", doc)

    def exec(
        self, func: str, *args: str, stdin: str | bytes | None = None, env: Mapping[str, str] | None = None
    ) -> Result:
        """Run the real ``mgrhooks exec FUNC ARGS...`` on this root in a subprocess (with
        ``env`` added to this process's environment), and wait for it (for tests of the
        command itself: exit status, stderr, stdin). :attr:`Result.document` is the
        output parsed when it is XML."""
        argv = [sys.executable, "-m", "mgrhooks", "exec", func, *args, "--root", str(self.path), "--mgr", self.mgr]
        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        done = subprocess.run(argv, input=data, capture_output=True, env={**os.environ, **(env or {})}, check=False)
        output = done.stdout.decode("utf-8", "replace")
        document = _parsed(done.stdout)
        out = _option(args, "--out") or "xml"
        params = _pairs(a for a in args if not a.startswith("-") and "=" in a)
        return Result(func, params, out, done.returncode, output, done.stderr.decode("utf-8", "replace"), document)

    def core_document(self, func: str, xml: str, elid: str | None = None) -> Path:
        """Write ``etc/core/<mgr>/<func>.xml`` (with ``elid``: ``<func>/<elid>.xml``, the
        document for one object): the main logic's result for a function the built-in
        core does not have (docs/protocol.md). :returns: the file"""
        folder = self.path / "etc" / "core" / self.mgr
        target = folder / func / f"{elid}.xml" if elid is not None else folder / f"{func}.xml"
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        target.write_text(xml)
        target.chmod(0o644)
        return target

    def read(self, relative: str) -> str:
        """The text of a file of the root (``var/samba.users``)."""
        return (self.path / relative).read_text()

    def log(self) -> str:
        """The root's panel log, ``var/<mgr>.log`` (``""`` before any call)."""
        log = self.path / "var" / f"{self.mgr}.log"
        return log.read_text() if log.exists() else ""

    def _core_doc_file(self, core_doc: Path | str | bytes | None) -> Path | None:
        if core_doc is None or isinstance(core_doc, Path):
            return core_doc.absolute() if core_doc is not None else None
        target = self.path.parent / f"{self.path.name}-core-doc-{next(self._documents)}.xml"
        target.write_bytes(core_doc.encode("utf-8") if isinstance(core_doc, str) else core_doc)
        return target


def _pairs(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``key=value`` strings as pairs. :raises ValueError: one is not in that form"""
    pairs = []
    for item in items:
        key, found, value = item.partition("=")
        if not found or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        pairs.append((key, value))
    return tuple(pairs)


def _option(args: Sequence[str], name: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _parsed(stdout: bytes) -> Element | None:
    if not stdout.lstrip().startswith(b"<"):
        return None
    from .xmldoc import DocumentError

    try:
        return parse(stdout)
    except DocumentError:
        return None
