"""Running nnUNetv2_* commands: Ctrl-C, a kill or a hang-up of the caller stops the command and its workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# Stands in for an nnUNetv2_* command: starts a worker process, records both pids, then works (sleeps).
FAKE_COMMAND = textwrap.dedent("""\
    import os, subprocess, sys, time
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    with open(sys.argv[1] + ".part", "w") as f:
        f.write(f"{os.getpid()} {worker.pid}")
    os.rename(sys.argv[1] + ".part", sys.argv[1])
    time.sleep(30)
""")

# A shell starts a job with Ctrl-C, SIGTERM and SIGHUP at their defaults; a pytest worker's children need not get
# that (an ignored or blocked signal is inherited), so the driver sets it up itself.
DRIVER = textwrap.dedent("""\
    import os, signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    from nnunet_lmnet.nnunet_commands import run
    try:
        run("fake_nnunet_command", "pids.txt", env=dict(os.environ))
    except KeyboardInterrupt:
        sys.exit(130)
""")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie waiting for a reaper has exited too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _with_fake_command(tmp_path: Path) -> dict[str, str]:
    """The environment with `fake_nnunet_command` (FAKE_COMMAND) first on the PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    command = bin_dir / "fake_nnunet_command"
    command.write_text(f"#!{sys.executable}\n{FAKE_COMMAND}")
    command.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _signal_state(*pids: int) -> str:
    """Per process: alive?, state and signal masks (/proc), for a failure message."""
    def one(pid: int) -> str:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return f"{pid}: gone"
        fields = [line for line in status.splitlines() if line.split(":")[0] in ("State", "SigBlk", "SigIgn", "SigCgt")]
        return f"{pid}: " + ", ".join(" ".join(f.split()) for f in fields)
    return "; ".join(one(p) for p in pids) + f"; this process' SIGINT handler: {signal.getsignal(signal.SIGINT)}"


def _kill(*pids: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("how, expected_code", [("ctrl-c", 130), ("sigterm", 128 + signal.SIGTERM),
                                                ("sighup", 128 + signal.SIGHUP)])
def test_stopping_the_caller_stops_the_command_quietly(tmp_path, how, expected_code):
    env = _with_fake_command(tmp_path)
    # Its own session, like a shell job: the terminal's Ctrl-C goes to the driver's process group.
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=tmp_path, env=env, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    pids: list[int] = []
    try:
        assert _wait_for(lambda: (tmp_path / "pids.txt").exists(), 60), "the command did not start"
        pids = [int(p) for p in (tmp_path / "pids.txt").read_text().split()]
        if how == "ctrl-c":
            os.killpg(driver.pid, signal.SIGINT)  # what the terminal does
        else:
            os.kill(driver.pid, signal.SIGTERM if how == "sigterm" else signal.SIGHUP)
        try:
            _, stderr = driver.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the driver did not end within 20 s; {_signal_state(driver.pid, *pids)}")
        assert driver.returncode == expected_code, stderr
        assert _wait_for(lambda: all(_gone(p) for p in pids), 15), "the command or its worker is still running"
        assert "Traceback" not in stderr
    finally:
        driver.kill()  # a no-op once it has been waited for
        _kill(*pids)


# The driver above, with the Ctrl-C landing inside subprocess.Popen: after the command has started, before Popen
# has returned (on a loaded machine the command can be up and running before its parent is scheduled again).
DRIVER_INTERRUPTED_WHILE_STARTING = textwrap.dedent("""\
    import os, signal, subprocess, sys, time
    real_popen = subprocess.Popen

    class PopenInterruptedAtTheEnd(real_popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            while not os.path.exists("pids.txt"):
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # Python runs the handler here

    subprocess.Popen = PopenInterruptedAtTheEnd
""") + DRIVER


def test_ctrl_c_while_the_command_starts_still_stops_it(tmp_path):
    env = _with_fake_command(tmp_path)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER_INTERRUPTED_WHILE_STARTING], cwd=tmp_path, env=env,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    pids: list[int] = []
    try:
        assert _wait_for(lambda: (tmp_path / "pids.txt").exists(), 60), "the command did not start"
        pids = [int(p) for p in (tmp_path / "pids.txt").read_text().split()]
        assert driver.wait(timeout=20) == 130
        assert _wait_for(lambda: all(_gone(p) for p in pids), 15), "the command or its worker is still running"
    finally:
        driver.kill()  # a no-op once it has been waited for
        _kill(*pids)
