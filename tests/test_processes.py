"""Processes: the handler processes a caller owns. Calls side by side in one process, each
with its own, start, guard and stop only their own handlers (real processes throughout)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from conftest import PYTHON_SHEBANG, PanelRoot
from mgrhooks.process import Processes

#: two calls at once in two threads of one process, each with its own Processes (as the
#: CLI makes it: orphans adopted, descriptors sealed) and its own root; the second starts
#: once the first one's handler runs. Prints what each call answered.
TWO_CALLS = """
import json, sys, threading, time
from pathlib import Path
from mgrhooks import Panel
from mgrhooks.dispatch import Options
from mgrhooks.process import Processes

first, second = sys.argv[1:3]
answers = {}

def call(root):
    with Processes(adopt_orphans=True, seal=True) as processes:
        panel = Panel(root)
        with panel.logging():
            response = panel.call("user", options=Options(processes=processes))
    answers[root] = (response.error, response.doc.findtext("error/msg") or "")

threads = [threading.Thread(target=call, args=(first,))]
threads[0].start()
while not (Path(first) / "var/handler.pid").exists():
    time.sleep(0.01)
threads.append(threading.Thread(target=call, args=(second,)))
threads[1].start()
for thread in threads:
    thread.join()
print(json.dumps(answers))
"""


def roots(tmp_path: Path) -> tuple[PanelRoot, PanelRoot]:
    made = []
    for name in ("first", "second"):
        for sub in ("etc/xml", "addon", "var"):
            (tmp_path / name / sub).mkdir(parents=True)
        made.append(PanelRoot(tmp_path / name))
    return made[0], made[1]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_for(path: Path, seconds: float) -> bool:
    ends = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < ends:
        time.sleep(0.05)
    return path.exists()


def test_two_calls_in_two_threads_each_kill_only_their_own_handlers(tmp_path: Path) -> None:
    """The first call's handler times out and is killed, with the daemon the second call's
    handler double-forked meanwhile (adopted by the same process) left running; the second
    handler and its daemon finish their work."""
    first, second = roots(tmp_path)
    first.handler(
        "hang.py",
        f"{PYTHON_SHEBANG}import os, time\nopen('var/handler.pid', 'w').write(str(os.getpid()))\ntime.sleep(600)\n",
        '<event name="user" before="yes"/>',
        attrs='timeout="1"',
    )
    second.handler(
        "slow.py",
        f"""{PYTHON_SHEBANG}import os, sys, time
open('var/handler.pid', 'w').write(str(os.getpid()))
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # a daemon, detached as daemon(3) does
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        open('var/daemon.pid', 'w').write(str(os.getpid()))
        time.sleep(4)
        open('var/daemon.done', 'w').write('done')
        os._exit(0)
    os._exit(0)
os.wait()
time.sleep(3)  # past the first call's timeout and kill grace
open('var/handler.done', 'w').write('done')
sys.stdout.write(sys.stdin.read())
""",
        '<event name="user" before="yes"/>',
    )
    result = subprocess.run(
        [sys.executable, "-c", TWO_CALLS, str(first.path), str(second.path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert answers[str(first.path)][0] is True and "timed out after 1s" in answers[str(first.path)][1]
    assert answers[str(second.path)] == [False, ""]
    assert not alive(int(first.read("var/handler.pid")))
    assert second.read("var/handler.done") == "done"
    assert wait_for(second.path / "var/daemon.done", 10), "the second call's daemon was killed"
    assert "timed out" in first.log() and "'slow.py'" not in first.log()
    assert "'hang.py'" not in second.log() and "Executing: addon/slow.py" in second.log()


def test_the_process_modules_keep_no_state_of_their_own() -> None:
    """What runs belongs to a Processes object: no module of the package holds a set, a
    list, a dict or a flag that its functions change (SPAWNED and _sealed were such)."""
    import importlib

    for name in ("spawn", "runner", "containment", "processes"):
        module = importlib.import_module(f"mgrhooks.process.{name}")
        values = [(key, value) for key, value in vars(module).items() if key not in ("TYPE_CHECKING", "__builtins__")]
        kept = [key for key, value in values if isinstance(value, set | list | dict | bytearray | bool)]
        assert kept == [], f"mgrhooks.process.{name} keeps {kept}"


#: two Processes in two threads, each running a handler (the program given) until killed
TWO_GUARDED = """
import os, sys, threading
from mgrhooks.process import Processes
from mgrhooks.process.runner import RunRequest

def run(program):
    with Processes(adopt_orphans=True, seal=True) as processes:
        request = RunRequest((program,), os.path.dirname(program), {"PATH": os.environ["PATH"]}, b"", timeout=600)
        processes.run(request)

for program in sys.argv[1:]:
    threading.Thread(target=run, args=(program,)).start()
"""


def test_each_guardian_kills_its_own_handler_and_its_setsid_child_when_the_process_dies(tmp_path: Path) -> None:
    """Two Processes in one process, each with its own guardian: SIGKILL of that process
    mid-handler ends both handlers and the child each moved to a session of its own."""
    programs = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        program = tmp_path / name / "handler"
        program.write_text(
            f"""{PYTHON_SHEBANG}import os, time
if os.fork() == 0:
    os.setsid()
    open('child.pid', 'w').write(str(os.getpid()))
    time.sleep(600)
    os._exit(0)
open('handler.pid', 'w').write(str(os.getpid()))
time.sleep(600)
"""
        )
        program.chmod(0o700)
        programs.append(str(program))
    driver = subprocess.Popen([sys.executable, "-c", TWO_GUARDED, *programs])
    pids = [tmp_path / name / pid for name in ("first", "second") for pid in ("handler.pid", "child.pid")]
    try:
        assert all(wait_for(path, 30) for path in pids)
        time.sleep(0.2)  # the pid files are written before the files' writers sleep
        driver.kill()
        driver.wait()
        running = [int(path.read_text()) for path in pids]
        ends = time.monotonic() + 10
        while any(alive(pid) for pid in running) and time.monotonic() < ends:
            time.sleep(0.05)
        assert [pid for pid in running if alive(pid)] == []
    finally:
        driver.kill()
        for path in pids:
            if path.exists():
                with contextlib.suppress(OSError):
                    os.kill(int(path.read_text()), signal.SIGKILL)


def test_prepare_starts_the_guardian_before_any_handler_and_close_ends_it() -> None:
    """A caller with time to spare (the walk, while libxml2 checks a supplied list) sets
    everything up ahead of the first handler: the guardian runs, no handler has started."""
    before = {p.pid for p in psutil.Process().children()}
    with Processes(guard=True) as processes:
        processes.prepare()
        started = [p for p in psutil.Process().children() if p.pid not in before]
        assert len(started) == 1
        for _ in range(100):  # (right after its start, until exec has set it up, it shows no arguments)
            if started[0].cmdline():
                break
            time.sleep(0.01)
        assert started[0].cmdline()[:2] == ["/bin/sh", "-c"]
        processes.prepare()  # once is enough
        assert [p for p in psutil.Process().children() if p.pid not in before] == started
    assert started[0].pid not in {p.pid for p in psutil.Process().children()}


def test_wait_ended_gives_the_status_once_the_child_ends_or_none_when_time_runs_out() -> None:
    """``wait_ended`` (the guardian's close, ``Spawned.wait``): the exit status once the
    child ended, reaped; ``None`` while it runs; for both kinds of child."""
    from mgrhooks.process.spawn import Spawned, wait_ended

    children = [
        ("Popen", lambda argv: subprocess.Popen(argv)),
        ("posix_spawn", lambda argv: Spawned(os.posix_spawn(argv[0], argv, dict(os.environ)))),
    ]
    for name, start in children:
        sleeper = start(["/bin/sleep", "5"])
        assert wait_ended(sleeper, 0.05) is None, name
        sleeper.kill()
        assert wait_ended(sleeper, 5) == -signal.SIGKILL, name
        quick = start(["/bin/sh", "-c", "exit 3"])
        assert wait_ended(quick, 5) == 3 and wait_ended(quick, 0) == 3, name
        with contextlib.suppress(ChildProcessError):
            os.waitpid(quick.pid, os.WNOHANG)
            raise AssertionError(f"{name}: not reaped")
