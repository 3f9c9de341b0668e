"""``mgrhooks module``: BILLmanager processing and payment modules run the way the panel
starts them (``--command``), with the panel's environment, logging, timeout and
containment; their answers judged; their mgrctl calls reaching the root."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import PYTHON_SHEBANG, PanelRoot
from mgrhooks.root import mgrctl_script

#: a processing module in the shape of public ones (bash, getopt-style arguments): it
#: answers features, opens a service by calling the panel back, and fails on request
PROCESSING = """\
    #!/bin/bash
    command= item=
    while [ $# -gt 0 ]; do
        case "$1" in
            --command) command=$2; shift 2 ;;
            --item) item=$2; shift 2 ;;
            *) shift ;;
        esac
    done
    echo "pmtest: $command item=$item" >&2
    case "$command" in
        features)
            echo '<?xml version="1.0" encoding="UTF-8"?>'
            echo '<doc><itemtypes><itemtype name="vds"/></itemtypes><features><feature name="open"/></features></doc>'
            ;;
        open)
            sbin/mgrctl -m billmgr service.postopen elid="$item" sok=ok >/dev/null || exit 2
            ;;
        env)
            echo "<doc><mgr>$MGR</mgr><root>$MGRHOOKS_ROOT</root><param>${PARAM_func-unset}</param><cwd>$(pwd)</cwd></doc>"
            ;;
        hang) exec sleep 300 ;;
        broken) echo 'not xml at all' ;;
        *)
            echo "<doc><error type=\\"unknown\\" object=\\"command\\" value=\\"$command\\"><msg>no such command</msg></error></doc>"
            exit 1
            ;;
    esac
"""

#: a payment module: pmvalidate reads the payment method's form from stdin and answers
#: nothing when it is valid, an error document when not
PAYMENT = """\
    import sys
    import xml.etree.ElementTree as ET

    if sys.argv[1:3] == ["--command", "config"]:
        print("<doc><feature><pmvalidate>on</pmvalidate></feature><param/></doc>")
    elif sys.argv[1:3] == ["--command", "pmvalidate"]:
        form = ET.parse(sys.stdin).getroot()
        if not (form.findtext("terminal") or "").startswith("T-"):
            print('<doc><error type="value" object="terminal"><msg>bad terminal</msg></error></doc>')
            sys.exit(1)
"""


@pytest.fixture
def billing(root: PanelRoot) -> PanelRoot:
    """A root with sbin/mgrctl, a core document for service.postopen and an after-handler
    on it that records the service opened, and the two modules."""
    (root.path / "sbin").mkdir()
    (root.path / "sbin" / "mgrctl").write_text(mgrctl_script(sys.executable))
    (root.path / "sbin" / "mgrctl").chmod(0o755)
    (root.path / "etc" / "core" / "billmgr").mkdir(parents=True)
    (root.path / "etc" / "core" / "billmgr" / "service.postopen.xml").write_text("<doc><ok/></doc>\n")
    root.handler(
        "opened.sh",
        '#!/bin/sh\necho "$PARAM_elid" >> var/opened\necho "<doc/>"\n',
        '<event name="service.postopen" after="yes"/>',
        type="cgi",
    )
    _program(root.path / "processing" / "pmtest", PROCESSING)
    (root.path / "lib" / "python").mkdir(parents=True)
    _program(root.path / "lib" / "python" / "pmpay.py", PYTHON_SHEBANG + textwrap.dedent(PAYMENT))
    (root.path / "paymethods").mkdir()
    (root.path / "paymethods" / "pmpay").symlink_to("../lib/python/pmpay.py")  # as install guides do
    for path in [root.path, *root.path.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o022)
    return root


def _program(path: Path, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip())
    path.chmod(0o750)


def _module(root: PanelRoot, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(root.argv("module", *args), input=stdin, capture_output=True, text=True, timeout=60)


def test_features_answer_is_shown(billing: PanelRoot) -> None:
    result = _module(billing, "processing/pmtest", "--command", "features", "--out", "json")
    assert result.returncode == 0, result.stderr
    assert '"itemtype": {"$name": "vds"}' in result.stdout


def test_open_calls_back_into_the_root_and_is_logged(billing: PanelRoot) -> None:
    result = _module(billing, "processing/pmtest", "--command", "open", "--item", "42")
    assert result.returncode == 0, result.stdout + result.stderr
    assert billing.read("var/opened") == "42\n"  # mgrctl reached the root: its handler ran
    log = billing.log()
    assert "external INFO Executing: processing/pmtest --command open --item 42" in log
    assert "external INFO processing/pmtest: pmtest: open item=42" in log
    assert "'processing/pmtest' pid " in log


def test_the_module_gets_the_panel_environment_without_a_request(billing: PanelRoot) -> None:
    result = _module(billing, "processing/pmtest", "--command", "env", "--out", "text")
    assert result.returncode == 0, result.stderr
    root = str(billing.path)
    assert result.stdout.splitlines() == ["mgr=billmgr", f"root={root}", "param=unset", f"cwd={root}"]


def test_a_module_error_is_shown_with_exit_status_1(billing: PanelRoot) -> None:
    result = _module(billing, "processing/pmtest", "--command", "frobnicate", "--out", "text")
    assert result.returncode == 1
    assert result.stdout == "ERROR unknown(command,frobnicate): no such command\n"


def test_an_answer_that_is_not_xml_is_an_error_naming_the_module(billing: PanelRoot) -> None:
    result = _module(billing, "processing/pmtest", "--command", "broken", "--out", "text")
    assert result.returncode == 1
    assert "Module 'processing/pmtest --command broken' failed: invalid answer" in result.stdout


def test_a_module_that_hangs_is_stopped_at_its_timeout(billing: PanelRoot) -> None:
    started = time.monotonic()
    result = _module(billing, "processing/pmtest", "--command", "hang", "--timeout", "1", "--out", "text")
    assert result.returncode == 1
    assert "failed: timed out after 1s" in result.stdout
    assert time.monotonic() - started < 15


def test_pmvalidate_reads_the_form_on_stdin(billing: PanelRoot) -> None:
    good = _module(billing, "paymethods/pmpay", "--command", "pmvalidate", stdin="<doc><terminal>T-1</terminal></doc>")
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout == '<?xml version="1.0" encoding="UTF-8"?>\n<doc>\n</doc>\n'  # nothing printed: success
    bad = _module(billing, "paymethods/pmpay", "--command", "pmvalidate", "--out", "text", stdin="<doc/>")
    assert bad.returncode == 1
    assert bad.stdout == "ERROR value(terminal): bad terminal\n"


def test_a_module_that_is_not_trusted_is_refused(billing: PanelRoot) -> None:
    program = billing.path / "processing" / "pmtest"
    program.chmod(0o777)
    result = _module(billing, "processing/pmtest", "--command", "features", "--out", "text")
    assert result.returncode == 1
    assert "Module 'processing/pmtest' is not trusted: file processing/pmtest is writable by group or others" in (
        result.stdout
    )


def test_a_program_outside_the_root_is_refused(billing: PanelRoot) -> None:
    result = _module(billing, "/bin/true", "--command", "features", "--out", "text")
    assert result.returncode == 1
    assert f"Module '/bin/true' is not inside the root {billing.path}" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace needs root here (CI runs as root)")
def test_a_module_with_the_panel_path_hard_coded_runs_with_the_option(billing: PanelRoot) -> None:
    _program(
        billing.path / "processing" / "pmabs",
        """\
        #!/bin/sh
        cd /usr/local/mgr5 || exit 3
        /usr/local/mgr5/sbin/mgrctl -m billmgr service.postopen elid=7 sok=ok >/dev/null || exit 4
        """,
    )
    result = _module(billing, "processing/pmabs", "--command", "open", "--item", "7", "--panel-path", "/usr/local/mgr5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert billing.read("var/opened") == "7\n"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: None, "cannot be run: No such file or directory"),
        (lambda path: path.mkdir(mode=0o755), "is not a regular file"),
        (lambda path: (path.write_text("#!/bin/sh\n"), path.chmod(0o644)), "is not executable"),
        (
            lambda path: (path.write_text("#!/bin/sh\n"), path.chmod(0o4755)),
            "is set-user-ID or set-group-ID (mode 4755)",
        ),
    ],
    ids=["missing", "folder", "not-executable", "setuid"],
)
def test_a_module_that_may_not_run_is_refused_naming_why(
    billing: PanelRoot, make: Callable[[Path], object], reason: str
) -> None:
    """A module is checked as a handler's program is (modules.vet): the call fails with
    the reason, and nothing runs."""
    make(billing.path / "processing" / "pmbad")
    result = _module(billing, "processing/pmbad", "--command", "features", "--out", "text")
    assert result.returncode == 1
    assert f"Module 'processing/pmbad' {reason}" in result.stdout


def test_a_module_gets_item_and_payment_on_its_command_line(billing: PanelRoot) -> None:
    _program(billing.path / "processing" / "pmargs", '#!/bin/sh\necho "<doc><argv>$*</argv></doc>"\n')
    result = _module(
        billing, "processing/pmargs", "--command", "open", "--item", "7", "--payment", "12", "--out", "text"
    )
    assert (result.returncode, result.stdout) == (0, "argv=--command open --item 7 --payment 12\n")
