"""The runner against real processes: pipes, exit statuses, timeouts, process trees."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from conftest import PYTHON_SHEBANG
from mgrhooks.process import Processes, containment, spawn
from mgrhooks.process.runner import RunOutcome, RunRequest


@pytest.fixture(autouse=True, params=["subprocess", "posix_spawn", "closefrom"])
def start(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs each way a handler can start: subprocess.Popen (a process whose C
    library cannot close descriptors in the child: glibc < 2.34), posix_spawn (the CLI:
    descriptors sealed), and posix_spawn closing them in the child (an application's
    process, ``serve``), from the test's own directory."""
    if request.param != "closefrom":
        original = spawn.posix_spawner
        monkeypatch.setattr(spawn, "posix_spawner", lambda close_from=False: None if close_from else original())
    return str(request.param)


@pytest.fixture
def run(start: str) -> Iterator[Callable[[RunRequest], RunOutcome]]:
    """Runs a handler as the ``start`` way says (no guardian, as before it had none)."""
    with Processes(guard=False, seal=start == "posix_spawn") as processes:
        yield processes.run


def request(tmp_path: Path, script: str, stdin: bytes = b"", **kwargs) -> RunRequest:
    program = tmp_path / "handler"
    program.write_text(PYTHON_SHEBANG + script)
    program.chmod(0o700)
    env = {"PATH": os.environ["PATH"], "READY": str(tmp_path / "ready")}
    return RunRequest((str(program),), str(tmp_path), env, stdin, **kwargs)


def wait_for_pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def test_stdin_is_complete_and_closed_stdout_and_stderr_apart(tmp_path: Path, run) -> None:
    script = "import sys\ndata = sys.stdin.buffer.read()\nsys.stderr.write('to the log')\nsys.stdout.buffer.write(data[::-1])\n"
    outcome = run(request(tmp_path, script, b"<doc>\n</doc>\n" * 10000))
    assert outcome.ok and outcome.returncode == 0
    assert outcome.stdout == (b"<doc>\n</doc>\n" * 10000)[::-1]
    assert outcome.stderr == b"to the log"


def test_handler_that_never_reads_stdin_does_not_block(tmp_path: Path, run) -> None:
    outcome = run(request(tmp_path, "print('<doc/>')\n", b"x" * 5_000_000))
    assert outcome.ok and outcome.stdout == b"<doc/>\n"


def test_runs_in_cwd_with_exactly_the_given_environment(tmp_path: Path, run) -> None:
    script = "import os, json\nprint(json.dumps([os.getcwd(), sorted(os.environ)]))\n"
    outcome = run(request(tmp_path, script))
    cwd, names = __import__("json").loads(outcome.stdout)
    assert cwd == str(tmp_path)
    assert set(names) - {"LC_CTYPE"} == {"PATH", "READY"}  # CPython may add LC_CTYPE itself


def test_non_zero_exit_and_signal(tmp_path: Path, run) -> None:
    outcome = run(request(tmp_path, "import sys\nprint('partial')\nsys.exit(3)\n"))
    assert (outcome.failure, outcome.reason, outcome.returncode, outcome.stdout) == (
        "exit",
        "exit status 3",
        3,
        b"partial\n",
    )
    outcome = run(request(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"))
    assert (outcome.failure, outcome.reason) == ("exit", "killed by signal SIGKILL")


def test_program_that_cannot_start(tmp_path: Path, run) -> None:
    outcome = run(RunRequest((str(tmp_path / "missing"),), str(tmp_path), {}, b""))
    assert outcome.failure == "spawn" and outcome.returncode is None
    assert outcome.reason == f"cannot start {tmp_path / 'missing'}: No such file or directory"


def open_descriptors(below: int = 1024) -> list[int]:
    """This process's open descriptors, by probing (a listing of /proc would hold one)."""
    return [fd for fd in range(below) if _is_open(fd)]


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def room_for(descriptors: int) -> Iterator[None]:
    """Meanwhile this process can open ``descriptors`` more and no others (RLIMIT_NOFILE
    just above the free numbers it leaves)."""
    import resource

    opened = open_descriptors()
    free = [fd for fd in range(1024) if fd not in opened]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (free[descriptors], hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_handler_that_cannot_get_its_descriptors_leaves_none_open(tmp_path: Path, run) -> None:
    """Out of descriptors (EMFILE) at the memfd, the stdout pipe or the stderr pipe: a spawn
    failure, and whatever was opened before the failing step is closed again (an
    application embedding mgrhooks must not lose descriptors to failed handlers)."""
    req = request(tmp_path, "print('<doc/>')\n")
    assert run(req).ok  # set up (sealed, for posix_spawn) before the limit
    before = open_descriptors()
    reasons = []
    for room in range(5):  # the memfd needs 1, each pipe 2
        with room_for(room):
            outcome = run(req)
        assert open_descriptors() == before, f"room for {room} descriptors"
        reasons.append((outcome.failure, outcome.reason.rsplit(": ", 1)[-1]))
    assert reasons == [("spawn", "Too many open files")] * 5


def test_a_guardian_out_of_descriptors_neither_fails_the_call_nor_leaves_any_open() -> None:
    """EMFILE at the guardian's memfd, pipe or /dev/null: ``watch`` goes on without it
    (tried once, as any guardian that cannot start), and nothing it opened stays open."""
    before = open_descriptors()
    for room in range(4):  # the memfd needs 1, the pipe 2, /dev/null 1
        guardian = containment.Guardian()
        with room_for(room):
            guardian.watch(os.getpid())
        assert open_descriptors() == before, f"room for {room} descriptors"
        guardian.watch(os.getpid())  # not tried again, though it could start now
        assert open_descriptors() == before
        guardian.close()


def test_timeout_kills_the_whole_tree_including_sigterm_ignorers(tmp_path: Path, run) -> None:
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


def test_a_child_still_holding_stdout_is_killed_after_the_drain_window(tmp_path: Path, run) -> None:
    """A background child that keeps the handler's stdout after the handler exited is part
    of the handler: the output is read for drain_grace, then the child is stopped; the run
    is the handler's (ok, its output kept)."""
    script = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # inherits stdout
open(os.environ["READY"], "w").write(str(child.pid))
print("<doc/>", flush=True)
"""
    outcome = run(request(tmp_path, script, drain_grace=0.3, kill_grace=0.5))
    (grandchild,) = wait_for_pids(tmp_path / "ready")
    try:
        assert outcome.ok and outcome.stdout == b"<doc/>\n"
        assert outcome.duration < 0.3 + 0.5 + 3  # drain, grace (SIGTERM is enough here), slack
        assert grandchild in outcome.killed
        assert not alive(grandchild)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(grandchild, 9)


def test_a_new_session_still_holding_stderr_and_ignoring_sigterm_is_killed(tmp_path: Path, run) -> None:
    """Leaving the session is not detaching: a child in a session of its own that keeps the
    handler's stderr, and ignores SIGTERM, gets SIGKILL after kill_grace."""
    script = """
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.close(1)  # stdout closed; stderr kept
    open(os.environ["READY"], "w").write(str(os.getpid()))
    time.sleep(30)
    os._exit(0)
while not os.path.exists(os.environ["READY"]):
    time.sleep(0.01)
print("<doc/>")
"""
    outcome = run(request(tmp_path, script, drain_grace=0.2, kill_grace=0.3))
    (child,) = wait_for_pids(tmp_path / "ready")
    try:
        assert outcome.ok and outcome.stdout == b"<doc/>\n"
        assert outcome.killed == (child,)
        assert not alive(child)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, 9)


def test_a_daemon_that_detached_properly_is_left_alone(tmp_path: Path, run) -> None:
    """A daemon in a new session with its standard streams on /dev/null (as daemon(3)
    leaves them) is no part of the handler: the run ends as the handler exits, and the
    daemon goes on."""
    script = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        open(os.environ["READY"], "w").write(str(os.getpid()))
        time.sleep(30)
    os._exit(0)
os.wait()
while not os.path.exists(os.environ["READY"]):
    time.sleep(0.01)
print("<doc/>")
"""
    outcome = run(request(tmp_path, script, drain_grace=0.3))
    (daemon,) = wait_for_pids(tmp_path / "ready")
    try:
        assert outcome.ok and outcome.killed == ()
        assert outcome.duration < 0.3 + 3
        assert alive(daemon)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, 9)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_output_over_the_limit_is_cut_and_the_handler_stopped(tmp_path: Path, run) -> None:
    script = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    outcome = run(request(tmp_path, script, output_limit=1_000_000))
    assert outcome.failure == "output" and outcome.reason == "output exceeded 1000000 bytes"
    assert 1_000_000 < len(outcome.stdout) <= 1_000_000 + 65536


def test_large_outputs_arrive_whole_through_the_widened_pipe(tmp_path: Path, run) -> None:
    """Past the first full read the pipe is asked to grow (fewer reads and wake-ups for a
    10 MB document); stdout and stderr still arrive whole, in order, and the limit holds."""
    script = (
        "import os, sys\nblock = bytes(range(256)) * 4096\n"
        "for n in range(12):\n    os.write(1, block[n:] + block[:n])\n    os.write(2, b'e%d\\n' % n)\n"
    )
    expected = bytes(range(256)) * 4096  # 1 MiB, rotated by n in write n
    outcome = run(request(tmp_path, script))
    assert outcome.ok and len(outcome.stdout) == 12 * len(expected)
    for n in range(12):
        assert outcome.stdout[n * len(expected) : (n + 1) * len(expected)] == expected[n:] + expected[:n]
    assert outcome.stderr == b"".join(b"e%d\n" % n for n in range(12))
    limited = run(request(tmp_path, script, output_limit=3_000_000))
    assert limited.failure == "output" and len(limited.stdout) == 3_000_001


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("sys.stdout.buffer.write(data)", lambda data: data),  # cat: the document comes back
        ("sys.stdout.buffer.write(data[:-9] + b'<x/>' + data[-9:])", lambda data: data[:-9] + b"<x/>" + data[-9:]),
        ("sys.stdout.buffer.write(data[:3_000_000])", lambda data: data[:3_000_000]),
        ("sys.stdout.buffer.write(data + b'more')", lambda data: data + b"more"),
        (
            "sys.stdout.buffer.write(data[:100_000] + b'!' + data[100_001:])",
            lambda data: data[:100_000] + b"!" + data[100_001:],
        ),
    ],
    ids=["echo", "changed-at-the-end", "shorter", "longer", "changed-early"],
)
def test_a_large_output_that_begins_as_its_input_arrives_whole(tmp_path: Path, run, script: str, expected) -> None:
    """Such an output is compared with the input as it is read (docs/performance.md); what
    arrives is still every byte printed, and an exact echo is the input itself, not a copy."""
    data = b"".join(b"<elem><n>%07d</n></elem>\n" % n for n in range(250_000))  # 6 MB
    outcome = run(request(tmp_path, f"import sys\ndata = sys.stdin.buffer.read()\n{script}\n", data))
    assert outcome.ok and outcome.stdout == expected(data)
    assert (outcome.stdout is data) == (script == "sys.stdout.buffer.write(data)")
    limited = run(
        request(
            tmp_path, "import sys\nsys.stdout.buffer.write(sys.stdin.buffer.read())\n", data, output_limit=2_000_000
        )
    )
    assert limited.failure == "output" and len(limited.stdout) == 2_000_001 and limited.stdout == data[:2_000_001]


STDIN_SEEN = """import hashlib, os, sys
inode = os.fstat(0).st_ino
try:
    fd = os.open("/proc/self/fd/0", os.O_RDWR)
    os.write(fd, b"changed")
    wrote = "wrote"
except OSError:
    wrote = "refused"
data = sys.stdin.buffer.read()
print(inode, hashlib.sha256(data).hexdigest(), wrote)
"""


def test_a_large_stdin_handed_on_unchanged_is_one_sealed_file(tmp_path: Path, run) -> None:
    """Runs given the same large bytes one after another (xml handlers passing a document on
    unchanged) read one in-memory file, not a copy written for each (docs/performance.md);
    no handler can change it for the next; other bytes, even equal ones, get a file of their own."""
    import hashlib

    data = b"".join(b"<elem><n>%07d</n></elem>\n" for n in range(100_000))  # 2.4 MB
    seen = [run(request(tmp_path, STDIN_SEEN, stream)).stdout.split() for stream in (data, data, data[:-1] + data[-1:])]
    digest = hashlib.sha256(data).hexdigest().encode()
    assert all(digest == hexdigest for _, hexdigest, _ in seen)
    assert seen[0][0] == seen[1][0] != seen[2][0]
    assert {wrote for _, _, wrote in seen} == {b"refused"}
    small = run(request(tmp_path, "import sys\nsys.stdout.write(sys.stdin.read())\n", b"<doc/>\n"))
    assert small.ok and small.stdout == b"<doc/>\n"  # a small one is written for its run, as ever


def test_a_stdin_kept_ahead_is_the_file_the_run_reads(tmp_path: Path, start: str) -> None:
    """``keep`` writes a large stdin's sealed file before the run that reads it (the walk,
    while libxml2 checks a supplied list): that run reads the same file; a small stdin is
    not kept and lets the kept one go."""
    data = b"".join(b"<elem><n>%07d</n></elem>\n" for n in range(100_000))  # 2.4 MB
    with Processes(guard=False, seal=start == "posix_spawn") as processes:
        kept = processes.keep(data)
        assert kept is not None and processes.keep(data) == kept  # the same bytes: not written again
        inode = os.fstat(kept).st_ino
        seen = processes.run(request(tmp_path, STDIN_SEEN, data)).stdout.split()
        assert seen[0] == str(inode).encode() and seen[2] == b"refused"
        assert processes.keep(b"<doc/>\n") is None
        with pytest.raises(OSError):
            os.fstat(kept)  # closed with it


def test_spawning_stays_on_the_vfork_fast_path(tmp_path: Path, monkeypatch, start) -> None:
    """preexec_fn, user=, group= and extra_groups= force a real fork(), whose cost grows
    with the runner's memory; a handler gets its own session through start_new_session."""
    import subprocess

    if start == "closefrom":
        pytest.skip("posix_spawn: no subprocess.Popen")

    seen: list[dict[str, object]] = []
    original = subprocess.Popen.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    with Processes(guard=False) as processes:  # not sealed
        assert processes.run(request(tmp_path, "print('<doc/>')\n")).ok
    (kwargs,) = seen
    assert kwargs["start_new_session"] is True
    assert not {"preexec_fn", "user", "group", "extra_groups"} & set(kwargs)


def test_posix_spawn_when_sealed_whatever_our_directory(tmp_path: Path, monkeypatch, start, run) -> None:
    """Sealed (or closing descriptors in the child), handlers start through posix_spawn from any current directory (a chdir
    file action puts each in its own), and this process's directory stays where it was."""
    spawned: list[str] = []
    original = spawn.PosixSpawn.__call__

    def spy(self, argv, *args):
        spawned.append(argv[0])
        return original(self, argv, *args)

    monkeypatch.setattr(spawn.PosixSpawn, "__call__", spy)
    monkeypatch.chdir(tmp_path)
    assert run(request(tmp_path, "print('<doc/>')\n")).ok
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    outcome = run(request(tmp_path, "import os\nprint(os.getcwd())\n"))
    assert outcome.stdout.decode().strip() == str(tmp_path)
    assert os.getcwd() == str(elsewhere)
    assert len(spawned) == (0 if start == "subprocess" else 2)


def test_a_directory_that_is_not_there_is_a_spawn_failure(tmp_path: Path, run) -> None:
    outcome = run(request(tmp_path, "print('<doc/>')\n")._replace(cwd=str(tmp_path / "gone")))
    assert outcome.failure == "spawn" and outcome.returncode is None
    assert outcome.reason.endswith(": No such file or directory")


def test_no_descriptor_of_the_runner_reaches_the_handler(tmp_path: Path, monkeypatch, start, run) -> None:
    """An inheritable descriptor the runner's process holds (one its own parent passed it,
    say) is closed by close_fds=True, made close-on-exec by seal_descriptors, or closed in
    the child by posix_spawn's closefrom action."""
    leaked = os.open(tmp_path, os.O_RDONLY)
    os.set_inheritable(leaked, True)
    inheritable = [fd for fd in range(3, 256) if _inheritable(fd)]
    try:
        script = "import os\nfor fd in range(3, 256):\n    try:\n        os.fstat(fd)\n        print(fd)\n    except OSError:\n        pass\n"
        outcome = run(request(tmp_path, script))  # sealed before the first handler, if asked
        if start == "posix_spawn":
            assert not os.get_inheritable(leaked)
        assert outcome.ok and outcome.stdout == b""
    finally:
        for fd in inheritable:
            if fd != leaked:
                os.set_inheritable(fd, True)
        os.close(leaked)


def _inheritable(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False


def test_signals_python_ignores_are_default_again_in_the_handler(tmp_path: Path, run) -> None:
    """CPython ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec, so
    a shell pipeline in a handler would not end on a closed pipe unless reset."""
    program = tmp_path / "handler.sh"
    program.write_text("#!/bin/sh\nawk '/^SigIgn/ {print $2}' /proc/$$/status\n")
    program.chmod(0o700)
    outcome = run(RunRequest((str(program),), str(tmp_path), {"PATH": os.environ["PATH"]}, b""))
    ignored = int(outcome.stdout, 16)
    assert not ignored & (1 << (13 - 1)) and not ignored & (1 << (25 - 1))  # SIGPIPE, SIGXFSZ


def test_a_guardian_that_cannot_start_leaves_the_call_going(tmp_path: Path, monkeypatch, start) -> None:
    tried: list[tuple[str, ...]] = []

    def refuse(argv, *rest):
        tried.append(argv)
        raise OSError(2, "No such file or directory")

    monkeypatch.setattr(containment, "start", refuse)
    with Processes(guard=True, seal=start == "posix_spawn") as processes:
        outcome = processes.run(request(tmp_path, "print('<doc/>')\n"))
        assert outcome.ok and outcome.stdout == b"<doc/>\n"
        assert processes.run(request(tmp_path, "print('<doc/>')\n")).ok  # tried once only
    assert len(tried) == 1 and tried[0][0] == "/bin/sh"


def test_failures_read_as_the_plain_words_logs_and_records_show() -> None:
    """A run's failure is a StrEnum whose members are the words the log, the event
    records and older callers compare with."""
    import json

    from mgrhooks.process.runner import Failure

    assert [str(f) for f in Failure] == ["spawn", "timeout", "output", "exit"]
    assert json.dumps({"status": Failure.TIMEOUT}) == '{"status": "timeout"}'
    assert f"{Failure.EXIT}" == "exit" and Failure("output") is Failure.OUTPUT


def test_each_run_gets_its_own_environment_directory_and_bytes(tmp_path: Path, run) -> None:
    """Runs one after another see each their own environment and directory (the fast path
    keeps the last ones' C form: a change must never be missed), and values that are not
    ASCII, or are bytes that are not UTF-8, arrive as they were given."""
    script = "import os\nprint(os.getcwd())\nprint(os.environb[b'V'].hex())\n"
    other = tmp_path / "other"
    other.mkdir()
    seen = []
    for cwd, value in ((tmp_path, "plain"), (tmp_path, "кириллица"), (other, "кириллица"), (other, "\udcff\udcfe")):
        req = request(tmp_path, script)
        outcome = run(req._replace(cwd=str(cwd), env={**req.env, "V": value}))
        assert outcome.ok, outcome.stderr
        seen.append(outcome.stdout.decode().split())
    assert seen == [
        [str(tmp_path), b"plain".hex()],
        [str(tmp_path), "кириллица".encode().hex()],
        [str(other), "кириллица".encode().hex()],
        [str(other), "fffe"],
    ]


def test_a_nul_byte_in_the_environment_is_refused_as_os_posix_spawn_does(tmp_path: Path, run) -> None:
    """The C strings the fast path builds would silently cut a value at a NUL byte; it
    refuses it, as Popen does (the dispatcher spills such values to files first)."""
    req = request(tmp_path, "print('<doc/>')\n")
    with pytest.raises(ValueError, match="embedded null byte"):
        run(req._replace(env={**req.env, "V": "a\0b"}))


def test_without_glibc_handlers_start_through_popen(tmp_path: Path, monkeypatch) -> None:
    """Where the C library is not glibc (no posix_spawn_file_actions_addchdir_np to rely
    on), a sealed Processes starts handlers through subprocess.Popen, correctly."""
    import subprocess

    started: list[object] = []
    original = subprocess.Popen.__init__

    def spy(self, *args, **kwargs):
        started.append(args[0])
        original(self, *args, **kwargs)

    monkeypatch.setattr(os, "confstr", lambda name: None)
    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    with Processes(guard=False, seal=True) as processes:
        outcome = processes.run(request(tmp_path, "import os\nprint(os.getcwd())\n"))
    assert outcome.ok and outcome.stdout.decode().strip() == str(tmp_path)
    assert len(started) == 1


def test_a_handler_that_cannot_start_starts_no_guardian(tmp_path: Path, start) -> None:
    """The guardian starts with the first handler that runs, not for one that cannot."""
    before = {p.pid for p in psutil.Process().children()}
    with Processes(guard=True, seal=start == "posix_spawn") as processes:
        outcome = processes.run(RunRequest((str(tmp_path / "missing"),), str(tmp_path), {}, b""))
        started = [p for p in psutil.Process().children() if p.pid not in before]
    assert outcome.failure == "spawn" and started == []
