"""The runner against real processes: pipes, exit statuses, timeouts, process trees."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import psutil

from mgrhooks.runner import RunRequest, run


def request(tmp_path: Path, script: str, stdin: bytes = b"", **kwargs) -> RunRequest:
    program = tmp_path / "handler"
    program.write_text(f"#!{sys.executable}\n" + script)
    program.chmod(0o700)
    env = {"PATH": os.environ["PATH"], "READY": str(tmp_path / "ready")}
    return RunRequest((str(program),), str(tmp_path), env, stdin, **kwargs)


def wait_for_pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def test_stdin_is_complete_and_closed_stdout_and_stderr_apart(tmp_path: Path) -> None:
    script = "import sys\ndata = sys.stdin.buffer.read()\nsys.stderr.write('to the log')\nsys.stdout.buffer.write(data[::-1])\n"
    outcome = run(request(tmp_path, script, b"<doc>\n</doc>\n" * 10000))
    assert outcome.ok and outcome.returncode == 0
    assert outcome.stdout == (b"<doc>\n</doc>\n" * 10000)[::-1]
    assert outcome.stderr == b"to the log"


def test_handler_that_never_reads_stdin_does_not_block(tmp_path: Path) -> None:
    outcome = run(request(tmp_path, "print('<doc/>')\n", b"x" * 5_000_000))
    assert outcome.ok and outcome.stdout == b"<doc/>\n"


def test_runs_in_cwd_with_exactly_the_given_environment(tmp_path: Path) -> None:
    script = "import os, json\nprint(json.dumps([os.getcwd(), sorted(os.environ)]))\n"
    outcome = run(request(tmp_path, script))
    cwd, names = __import__("json").loads(outcome.stdout)
    assert cwd == str(tmp_path)
    assert set(names) - {"LC_CTYPE"} == {"PATH", "READY"}  # CPython may add LC_CTYPE itself


def test_non_zero_exit_and_signal(tmp_path: Path) -> None:
    outcome = run(request(tmp_path, "import sys\nprint('partial')\nsys.exit(3)\n"))
    assert (outcome.failure, outcome.reason, outcome.returncode, outcome.stdout) == (
        "exit",
        "exit status 3",
        3,
        b"partial\n",
    )
    outcome = run(request(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"))
    assert (outcome.failure, outcome.reason) == ("exit", "killed by signal SIGKILL")


def test_program_that_cannot_start(tmp_path: Path) -> None:
    outcome = run(RunRequest((str(tmp_path / "missing"),), str(tmp_path), {}, b""))
    assert outcome.failure == "spawn" and outcome.returncode is None
    assert outcome.reason == f"cannot start {tmp_path / 'missing'}: No such file or directory"


def test_timeout_kills_the_whole_tree_including_sigterm_ignorers(tmp_path: Path) -> None:
    script = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
open(os.environ["READY"], "w").write(f"{os.getpid()} {child.pid}")
time.sleep(600)
"""
    started = time.monotonic()
    outcome = run(request(tmp_path, script, timeout=1.0, kill_grace=0.5))
    elapsed = time.monotonic() - started
    assert outcome.failure == "timeout" and outcome.reason == "timed out after 1s"
    assert outcome.returncode == -9
    pids = wait_for_pids(tmp_path / "ready")
    assert set(pids) <= set(outcome.killed)
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert elapsed < 1.0 + 2 * 0.5 + 1.0  # timeout + the two grace periods, with slack


def test_grandchild_holding_stdout_does_not_hang_and_may_outlive(tmp_path: Path) -> None:
    script = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # inherits stdout
open(os.environ["READY"], "w").write(str(child.pid))
print("<doc/>", flush=True)
"""
    outcome = run(request(tmp_path, script, drain_grace=0.3))
    try:
        assert outcome.ok and outcome.stdout == b"<doc/>\n"
        assert outcome.duration < 5
        (grandchild,) = wait_for_pids(tmp_path / "ready")
        assert psutil.pid_exists(grandchild)  # a background child may outlive its handler
    finally:
        for pid in wait_for_pids(tmp_path / "ready"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def test_output_over_the_limit_is_cut_and_the_handler_stopped(tmp_path: Path) -> None:
    script = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    outcome = run(request(tmp_path, script, output_limit=1_000_000))
    assert outcome.failure == "output" and outcome.reason == "output exceeded 1000000 bytes"
    assert 1_000_000 < len(outcome.stdout) <= 1_000_000 + 65536


def test_spawning_stays_on_the_vfork_fast_path(tmp_path: Path, monkeypatch) -> None:
    """preexec_fn, user=, group= and extra_groups= force a real fork(), whose cost grows
    with the runner's memory; a handler gets its own session through start_new_session."""
    import subprocess

    seen: list[dict[str, object]] = []
    original = subprocess.Popen.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    assert run(request(tmp_path, "print('<doc/>')\n")).ok
    (kwargs,) = seen
    assert kwargs["start_new_session"] is True
    assert not {"preexec_fn", "user", "group", "extra_groups"} & set(kwargs)
