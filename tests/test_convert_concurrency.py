"""Converters run at the same time, or killed: one result per dataset id, no id under two names, no orphan workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from convert_fixtures import raw_entries
from nnunet_lmnet.dataset_conversion.common import staged_dataset
from nnunet_lmnet.errors import UserError

# A conversion of dataset id 7 that writes N files into its stage and waits for a go file before it finishes, so a
# test can run a second conversion while the first one is inside staged_dataset.
_SLOW_CONVERSION = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nnunet_lmnet.dataset_conversion.common import staged_dataset

    name, count, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    with staged_dataset(Path("src").resolve(), "raw", 7, name, overwrite=True) as stage:
        for i in range(count):
            (stage.dir / f"case{i}.txt").write_text(name)
        print("staged", flush=True)
        while not go.exists():
            time.sleep(0.02)
    print("done", flush=True)
""")


@pytest.fixture
def first_conversion(tmp_path):
    """A running conversion of id 7 (name 'First', 40 files), stopped inside staged_dataset until `release()`."""
    (tmp_path / "src").mkdir()
    go = tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CONVERSION, "First", "40", str(go)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "staged", proc.stderr.read()

        def release() -> str:
            go.write_text("")
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            return out

        yield proc, release
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("name", ["First", "Second"])
def test_a_second_conversion_of_the_same_id_fails_at_once(tmp_path, first_conversion, name):
    """Same id, same or another name, even with overwrite: refused while the first runs; the first's result stays."""
    proc, release = first_conversion
    started = time.monotonic()
    with pytest.raises(UserError, match=f"another conversion \\(process {proc.pid} on host .*\\) is converting "
                                        f"dataset id 7 into {tmp_path / 'raw'} right now"):
        with staged_dataset(tmp_path / "src", tmp_path / "raw", 7, name, overwrite=True) as stage:
            (stage.dir / "case0.txt").write_text("second")
    assert time.monotonic() - started < 5  # at once, not after waiting for the first
    assert "done" in release()
    assert raw_entries(tmp_path / "raw") == {"Dataset007_First"}  # the lock file is gone with its holder
    files = sorted((tmp_path / "raw" / "Dataset007_First").iterdir())
    assert len(files) == 40 and {f.read_text() for f in files} == {"First"}


def test_the_lock_of_a_killed_conversion_does_not_block(tmp_path, first_conversion):
    proc, _ = first_conversion
    proc.kill()
    proc.wait()
    assert (tmp_path / "raw" / ".Dataset007.lock").exists()  # left behind by the SIGKILL, but no longer locked
    with staged_dataset(tmp_path / "src", tmp_path / "raw", 7, "Second", overwrite=False) as stage:
        (stage.dir / "dataset.json").write_text("{}")
    assert raw_entries(tmp_path / "raw") == {"Dataset007_Second"}


@pytest.mark.parametrize("where", ["nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"])
def test_an_id_used_under_another_name_anywhere_nnunet_looks_is_refused(tmp_path, monkeypatch, where):
    source, roots = tmp_path / "src", {v: tmp_path / v for v in ("nnUNet_raw", "nnUNet_preprocessed",
                                                                   "nnUNet_results")}
    source.mkdir()
    for var, root in roots.items():
        root.mkdir()
        monkeypatch.setenv(var, str(root))
    (roots[where] / "Dataset007_Old").mkdir()
    (roots["nnUNet_preprocessed"] / "Dataset008_Thing").mkdir()  # the same name elsewhere is fine
    label = "" if where == "nnUNet_raw" else f" \\(\\${where}\\)"
    with pytest.raises(UserError, match=f"{roots[where]}{label} already holds Dataset007_Old with dataset id 7\\. "
                                        f"nnU-Net looks dataset ids up"):
        with staged_dataset(source, None, 7, "Thing", overwrite=True):
            pass
    with staged_dataset(source, None, 8, "Thing", overwrite=False):
        pass
    assert raw_entries(roots["nnUNet_raw"]) == ({"Dataset007_Old"} if where == "nnUNet_raw" else set()) | {
        "Dataset008_Thing"}


@pytest.mark.parametrize("appears", ["other name in raw", "other name in preprocessed", "target"])
def test_what_appears_during_the_conversion_is_checked_at_the_final_rename(tmp_path, monkeypatch, appears):
    """Another program (not a conversion: those wait for the lock) creates a folder while the conversion runs."""
    source, raw, pre = tmp_path / "src", tmp_path / "raw", tmp_path / "pre"
    source.mkdir()
    pre.mkdir()
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    newcomer = {"other name in raw": raw / "Dataset007_Other", "other name in preprocessed": pre / "Dataset007_Other",
                "target": raw / "Dataset007_Thing"}[appears]
    match = "appeared while this conversion ran"
    with pytest.raises(UserError, match=match):
        with staged_dataset(source, raw, 7, "Thing", overwrite=False) as stage:
            (stage.dir / "dataset.json").write_text("{}")
            newcomer.mkdir()
            (newcomer / "theirs.txt").write_text("theirs")
    assert (newcomer / "theirs.txt").read_text() == "theirs" and sorted(os.listdir(newcomer)) == ["theirs.txt"]
    assert raw_entries(raw) == ({newcomer.name} if newcomer.parent == raw else set())


# ------------------------------------------------------------------------------------- workers die with the parent

_ORPHAN_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from nnunet_lmnet.dataset_conversion.common import parallel_map

    def write_case(task):
        out, i = task
        time.sleep(0.25)
        (Path(out) / f"{os.getpid()}_{i}.txt").write_text("x")

    if __name__ == "__main__":
        parallel_map(write_case, [(sys.argv[1], i) for i in range(400)], 2, "cases")  # chunks of 16 cases
""")


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped counts as exited: it runs no code)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_stop_when_the_parent_is_sigkilled(tmp_path):
    script, out = tmp_path / "convert_many.py", tmp_path / "out"  # a file: spawn re-imports __main__ by path
    script.write_text(_ORPHAN_SCRIPT)
    out.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(out)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len({p.name.split("_")[0] for p in out.iterdir()}) < 2:  # both workers are writing
            assert parent.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        workers = {int(p.name.split("_")[0]) for p in out.iterdir()}
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        # Unguarded workers would finish their chunk (16 x 0.25 s) before they noticed the parent was gone.
        deadline = time.monotonic() + 1.5
        while not all(_gone(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(w) for w in workers), "workers outlived their parent"
        written = len(os.listdir(out))
        time.sleep(0.5)
        assert len(os.listdir(out)) == written < 400
    finally:
        if parent.poll() is None:
            parent.kill()
        for w in workers if "workers" in locals() else ():
            if not _gone(w):
                os.kill(w, signal.SIGKILL)
