"""What the command loads at start-up: a call without handlers imports what it uses, not
what other calls need (docs/performance.md, "Start-up"; bench/run.py row "cold start")."""

import os
import subprocess
import sys

from conftest import PanelRoot, unmeasured

#: modules a call without handlers, on a root with no serve and no etc/mgrhooks.conf, does
#: not need (each was once imported by every call), and what needs them
NOT_NEEDED = {
    "_socket": "asking a running serve (var/run/mgrhooks.sock)",
    "_json": "asking a running serve",
    "shlex": "exec --dry-run, the Executing: line of a handler",
    "mgrhooks.trust": "believing etc/mgrhooks.conf, plugin files, core documents",
    "mgrhooks.notify": "event records",
    "mgrhooks.plugins": "parsing plugin files (none here; else only when the registry cache is rebuilt)",
    "mgrhooks.handlers": "running handlers",
    "subprocess": "starting handlers where posix_spawn cannot",
    "logging": "records outside a panel log",
    "mgrhooks.mgrctlcli": "sbin/mgrctl's command, and its parse of a command line for a serve",
    "mgrhooks.cache": "the registry cache (of a root with plugin files)",
    "mgrhooks.env": "the environment of handlers, their spilled parameters",
}

#: regular expressions of ours that were compiled at import, and what uses them (a call
#: without handlers, answered by the built-in core, uses none)
NOT_COMPILED = {
    "mgrhooks.core.NAME_PATTERN": "a user looked up, added or changed",
    "mgrhooks.document._DOC_TAG": "a document kept as text given the request's attributes",
    "mgrhooks.document._NAME": "the same",
    "mgrhooks.render._INTERFACE_TAG": "a document kept as text printed with --out xml",
}

#: ``python -c`` that runs the ``mgrhooks`` command of ``sys.argv[1:]`` and, as it ends,
#: prints on stderr every pattern compiled meanwhile (``re`` keeps each in its cache)
_COMPILED = """
import atexit, re, sys
from mgrhooks.__main__ import main
atexit.register(lambda: print("compiled:", [key[1] for key in re._cache], file=sys.stderr))
sys.argv[0] = "mgrhooks"
main()
"""


def _imported(root: PanelRoot, *extra: str) -> list[str]:
    """The modules ``mgrhooks exec user`` imports on ``root`` (``python -X importtime``)."""
    env = {k: v for k, v in unmeasured().items() if not k.startswith(("OTEL_", "MGRHOOKS_"))}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *root.argv("exec", "user", *extra)[1:]],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '<doc func="user"' in result.stdout
    return [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]


def test_a_call_without_handlers_imports_nothing_it_does_not_use(root: PanelRoot) -> None:
    imported = _imported(root)
    assert "mgrhooks.dispatch" in imported  # (the listing is there)
    assert {name: why for name, why in NOT_NEEDED.items() if name in imported} == {}


def test_a_call_without_handlers_compiles_no_pattern_it_does_not_use(root: PanelRoot) -> None:
    import importlib

    env = {k: v for k, v in unmeasured().items() if not k.startswith(("OTEL_", "MGRHOOKS_"))}
    argv = [sys.executable, "-c", _COMPILED, *root.argv("exec", "user")[3:]]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '<doc func="user"' in result.stdout
    compiled = result.stderr.rpartition("compiled: ")[2]
    assert compiled.startswith("[")  # (the list was printed)
    patterns = {}
    for name in NOT_COMPILED:
        module, _, attribute = name.rpartition(".")
        pattern = getattr(importlib.import_module(module), attribute)
        patterns[name] = getattr(pattern, "pattern", pattern)  # (a compiled one on the old code)
    assert {name: why for name, why in NOT_COMPILED.items() if repr(patterns[name]) in compiled} == {}


def test_the_command_run_in_process_leaves_the_collector_as_it_is(root: PanelRoot) -> None:
    # the command's own process freezes what its start imports (mgrhooks.__main__); an
    # application or a test running the CLI in-process keeps its garbage collected
    import gc

    from click.testing import CliRunner

    from mgrhooks.cli import main

    frozen = gc.get_freeze_count()
    result = CliRunner().invoke(main, ["exec", "--root", str(root.path), "user"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert gc.get_freeze_count() == frozen == 0


def test_the_plugin_files_parser_is_loaded_only_to_build_the_registry(root: PanelRoot) -> None:
    root.handler("h", "#!/bin/sh\necho '<doc/>'\n", '<event name="desktop" after="yes"/>', type="cgi")
    assert "mgrhooks.plugins" in _imported(root)  # the registry cache is made
    assert "mgrhooks.plugins" not in _imported(root)  # and used
    (root.path / "etc" / "xml" / "billmgr_mod_h.xml").write_text("<mgrdata><broken></mgrdata>")
    assert "mgrhooks.plugins" in _imported(root)  # a file changed: parsed anew


def test_the_registry_cache_is_read_without_pickle_py(root: PanelRoot) -> None:
    # the C unpickler reads it; pickle.py (with its own imports) is for writing it
    root.handler("h", "#!/bin/sh\necho '<doc/>'\n", '<event name="desktop" after="yes"/>', type="cgi")
    assert "pickle" in _imported(root)  # the registry cache is made
    imported = _imported(root)
    assert "mgrhooks.cache" in imported and "mgrhooks.plugins" not in imported  # and used
    assert "pickle" not in imported


def test_the_local_client_is_loaded_when_a_serve_may_answer(root: PanelRoot) -> None:
    # a socket file nobody listens on (a killed serve's): the call is offered there, then
    # runs in this process
    (root.path / "var" / "run").mkdir()
    (root.path / "var" / "run" / "mgrhooks.sock").write_text("")
    imported = _imported(root)
    assert {"_socket", "_json"} <= set(imported)


def test_a_root_with_settings_believes_them_before_reading(root: PanelRoot) -> None:
    settings = root.path / "etc" / "mgrhooks.conf"
    settings.write_text("[record]\n")
    settings.chmod(0o644)
    assert "mgrhooks.trust" in _imported(root)
    settings.chmod(0o666)
    result = root.mgrhooks("exec", "user", env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")})
    assert result.returncode == 3, result.stderr
    assert "not trusted" in result.stderr
