"""Converters under signals, crashes and a failing file system: clean-up, no hangs, no leftovers, clear messages."""
from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from convert_fixtures import kvasir_ids, make_kvasir, raw_entries, tree_digest
from nnunet_lmnet.cli import main
from nnunet_lmnet.dataset_conversion import common
from nnunet_lmnet.dataset_conversion.common import staged_dataset
from nnunet_lmnet.errors import UserError
from nnunet_lmnet.signals import exit_on_signals


def _report_handlers(conn) -> None:
    conn.send([signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)])
    conn.close()


def test_clean_up_handlers_are_not_inherited_by_forked_workers():
    parent_default = signal.getsignal(signal.SIGTERM)
    with exit_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not parent_default  # active here...
        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_report_handlers, args=(send,))
        child.start()
        handlers = receive.recv()
        child.join(10)
    assert handlers == [signal.SIG_DFL, signal.SIG_DFL]  # ...but not in a forked child
    assert signal.getsignal(signal.SIGTERM) is parent_default


def test_a_forked_worker_that_gets_sigterm_while_starting_dies(tmp_path):
    """nnU-Net's verify forks a Pool, and the pool's shutdown SIGTERM can reach a worker that is still starting.

    Before the fix the worker swallowed it and the pool hung. Here a fork hook registered before the converter's
    sends the SIGTERM at the earliest moment: the worker must die of it, not run.
    """
    script = textwrap.dedent("""
        import multiprocessing, os, signal, sys

        os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))
        from nnunet_lmnet.signals import exit_on_signals

        if __name__ == "__main__":
            with exit_on_signals():
                worker = multiprocessing.get_context("fork").Process(target=sys.exit, args=(0,))
                worker.start()
                worker.join(20)
            print(worker.exitcode)
    """)
    out = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.strip() == str(-signal.SIGTERM), out.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_remove_the_temporary_folder(tmp_path, sig):
    """A kill or a closed terminal during a conversion: exit code 128+N and no hidden folder left behind."""
    (tmp_path / "src").mkdir()
    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from nnunet_lmnet.dataset_conversion.common import staged_dataset

        with staged_dataset(Path("src").resolve(), "raw", 7, "Thing", overwrite=False) as stage:
            (stage.dir / "half.txt").write_text("half-written")
            os.kill(os.getpid(), {int(sig)})
            time.sleep(10)
    """)
    done = subprocess.run([sys.executable, "-c", script], timeout=60, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 128 + sig, done.stderr
    assert raw_entries(tmp_path / "raw") == set()


# ------------------------------------------------------------------------------ failures reported in one line

@pytest.fixture
def kvasir(tmp_path, monkeypatch):
    """A small Kvasir-SEG download, $nnUNet_raw and the argv that converts it in this process."""
    make_kvasir(tmp_path / "dl", kvasir_ids(3))
    raw = tmp_path / "raw"
    raw.mkdir()
    monkeypatch.setenv("nnUNet_raw", str(raw))
    return tmp_path / "dl", raw, ["convert", "kvasir", str(tmp_path / "dl"), "--num-processes", "1"]


def _fail_on_third_png(monkeypatch, error: BaseException) -> None:
    import nnunet_lmnet.dataset_conversion.kvasir as kvasir_module

    calls = []

    def save_png(img, path):
        calls.append(path)
        if len(calls) == 3:
            raise error
        img.save(path, format="PNG")

    monkeypatch.setattr(kvasir_module, "save_png", save_png)


def test_disk_full_is_one_message_and_leaves_nothing(kvasir, monkeypatch, capsys):
    source, raw, argv = kvasir
    before = tree_digest(source)
    _fail_on_third_png(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "/raw/x_0000.png"))
    assert main(argv) == 1
    err = capsys.readouterr().err.split("\r")[-1]  # after the progress bar
    assert err.startswith("nnunet-lmnet convert: error: No space left on device: /raw/x_0000.png. The disk is full")
    assert err.count("\n") == 1
    assert raw_entries(raw) == set() and tree_digest(source) == before


def test_ctrl_c_exits_130_and_leaves_nothing(kvasir, monkeypatch, capsys):
    _, raw, argv = kvasir
    _fail_on_third_png(monkeypatch, KeyboardInterrupt())
    try:
        code = main(argv)
    except KeyboardInterrupt:  # escaping, it would stop the whole test session
        pytest.fail("Ctrl-C escaped the CLI's main() as a KeyboardInterrupt traceback")
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert raw_entries(raw) == set()


def test_read_only_nnunet_raw_is_one_message(kvasir, monkeypatch, capsys):
    _, raw, argv = kvasir
    mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):  # root ignores chmod, so the file system's answer is simulated
        if self.parent == raw:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"Read-only file system: {raw}" in err and "Point nnUNet_raw" in err and "Traceback" not in err


def test_a_dangling_link_in_the_source_is_named_not_skipped(kvasir, capsys):
    source, raw, argv = kvasir
    link = source / "Kvasir-SEG" / "images" / "cjzzzzzzzzzzzzzzzzzzzzzzz.jpg"
    link.symlink_to(source / "moved_away.jpg")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{link} is a symbolic link to {source / 'moved_away.jpg'}, which does not exist" in err
    assert link.is_symlink() and raw_entries(raw) == set()  # the source is left as it was


# ---------------------------------------------------------------------------------- leftovers of killed runs

def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _leftover(raw: Path, folder: str, kind: str, pid: int, host: str | None = None) -> Path:
    path = raw / f".{folder}.{host or common._host()}.{pid}.0123abcd.{kind}"
    path.mkdir(parents=True)
    (path / "dataset.json").write_text("{}")
    return path


def test_the_temporary_folder_of_a_sigkilled_conversion_is_removed_by_the_next(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    script = textwrap.dedent("""
        import os, signal
        from pathlib import Path
        from nnunet_lmnet.dataset_conversion.common import staged_dataset

        with staged_dataset(Path("src").resolve(), "raw", 7, "Thing", overwrite=False) as stage:
            (stage.dir / "half.txt").write_text("half-written")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, timeout=60)
    assert done.returncode == -signal.SIGKILL
    lock, left = sorted(raw_entries(tmp_path / "raw"))  # the lock file is removed by the next conversion too
    assert left.startswith(".Dataset007_Thing.") and left.endswith(".tmp") and lock == ".Dataset007.lock"

    with staged_dataset(tmp_path / "src", tmp_path / "raw", 8, "Other", overwrite=False) as stage:
        (stage.dir / "dataset.json").write_text("{}")
    assert raw_entries(tmp_path / "raw") == {"Dataset008_Other"}
    assert f"removed {left}, the temporary folder of Dataset007_Thing left by a conversion" in capsys.readouterr().out


def test_a_previous_version_that_could_not_be_deleted_is_removed_later(tmp_path, monkeypatch, capsys):
    source, raw = tmp_path / "src", tmp_path / "raw"
    source.mkdir()
    for version in ("v1", "v2"):
        with staged_dataset(source, raw, 7, "Thing", overwrite=True) as stage:
            (stage.dir / "version.txt").write_text(version)
        if version == "v1":
            monkeypatch.setattr(common, "_remove", lambda p: (_ for _ in ()).throw(PermissionError(13, "denied")))
    assert "is in place, but its previous version could not be deleted" in capsys.readouterr().out
    assert (raw / "Dataset007_Thing" / "version.txt").read_text() == "v2"
    [old] = [p for p in raw.iterdir() if p.name.endswith(".old")]
    old.rename(raw / old.name.replace(f".{os.getpid()}.", f".{_dead_pid()}."))  # as if from an earlier run
    monkeypatch.undo()
    with staged_dataset(source, raw, 8, "Other", overwrite=False) as stage:
        pass
    assert raw_entries(raw) == {"Dataset007_Thing", "Dataset008_Other"}
    assert "the previous version of Dataset007_Thing" in capsys.readouterr().out


def test_a_dataset_moved_aside_by_a_killed_overwrite_is_restored(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    raw = tmp_path / "raw"
    old = _leftover(raw, "Dataset007_Thing", "old", _dead_pid())
    _leftover(raw, "Dataset007_Thing", "tmp", _dead_pid())  # the new version, maybe incomplete
    with pytest.raises(UserError, match="already exists"):
        with staged_dataset(tmp_path / "src", raw, 7, "Thing", overwrite=False):
            pass
    assert raw_entries(raw) == {"Dataset007_Thing"}
    assert f"restored {raw / 'Dataset007_Thing'} from {old.name}" in capsys.readouterr().out


def test_folders_of_running_or_unknown_writers_are_kept(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    raw = tmp_path / "raw"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = _leftover(raw, "Dataset007_Thing", "tmp", sleeper.pid)
        other_host = _leftover(raw, "Dataset009_X", "tmp", _dead_pid(), host="elsewhere")
        older = raw / ".Dataset010_Y.89abcdef.tmp"
        older.mkdir()
        with pytest.raises(UserError, match=f"another conversion \\(process {sleeper.pid}\\) is writing"):
            with staged_dataset(tmp_path / "src", raw, 7, "Thing", overwrite=False):
                pass
        with staged_dataset(tmp_path / "src", raw, 8, "Other", overwrite=False):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()
    assert {running.name, other_host.name, older.name, "Dataset008_Other"} == raw_entries(raw)
    out = capsys.readouterr().out
    assert f"{other_host} was left by a conversion (host elsewhere)" in out
    assert f"{older} was left by a conversion (an older version)" in out


def test_a_failed_swap_puts_the_previous_version_back(tmp_path, monkeypatch):
    source, raw = tmp_path / "src", tmp_path / "raw"
    source.mkdir()
    with staged_dataset(source, raw, 7, "Thing", overwrite=False) as stage:
        (stage.dir / "version.txt").write_text("v1")
    rename = Path.rename

    def failing_rename(self, target):
        if self.name.endswith(".tmp"):
            raise OSError(errno.EIO, "Input/output error", str(self))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError):
        with staged_dataset(source, raw, 7, "Thing", overwrite=True) as stage:
            (stage.dir / "version.txt").write_text("v2")
    assert raw_entries(raw) == {"Dataset007_Thing"}
    assert (raw / "Dataset007_Thing" / "version.txt").read_text() == "v1"
