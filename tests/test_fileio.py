"""The one file writer (s2i_fast/fileio.py): atomic, size-checked, refuses special files."""

import os
import stat
import subprocess
import sys

import pytest

from s2i_fast.errors import OutputError
from s2i_fast.fileio import ensure_dir, remove_stale_temps, write_bytes, write_json

_WRITE_UNDER_LIMIT = """
import resource, signal, sys
from s2i_fast.errors import OutputError
from s2i_fast.fileio import write_bytes
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # files may not grow past 4 KiB
try:
    write_bytes(sys.argv[1], b"n" * 100_000)
except OutputError as e:
    print("ERR", e)
"""


def test_full_disk_keeps_previous_checkpoint(tmp_path):
    """A write that runs out of space fails with one line and leaves the old file whole."""
    path = tmp_path / "latest.pt"
    write_bytes(path, b"old checkpoint")
    out = subprocess.run([sys.executable, "-c", _WRITE_UNDER_LIMIT, str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("ERR could not write"), out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert path.read_bytes() == b"old checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def test_unwritable_target_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(OutputError, match="could not write"):
        write_bytes(blocker / "ckpt.pt", b"data")


def test_write_refuses_to_replace_a_device_node(tmp_path):
    """A character device at the target stays a device: the write is refused, nothing renamed."""
    link = tmp_path / "null"
    os.symlink("/dev/null", link)  # the target resolves to a character device
    with pytest.raises(OutputError, match="not a regular file"):
        write_bytes(link, b"data")
    assert link.is_symlink() and stat.S_ISCHR(os.stat(link).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["null"]


def test_write_refuses_a_fifo_and_a_folder(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"):
        write_bytes(fifo, b"x")
    (tmp_path / "dir").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        write_bytes(tmp_path / "dir", b"x")


def test_new_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = write_json(tmp_path / "a.json", {"k": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_text() == '{\n  "k": 1\n}\n'


def test_folder_under_a_regular_file_is_one_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="could not create folder"):
        ensure_dir(tmp_path / "f" / "sub")


def test_stale_temp_files_are_found_and_removed(tmp_path):
    stale = tmp_path / ".latest.pt.abc123.tmp"
    stale.write_bytes(b"half")
    other = tmp_path / ".other.pt.abc.tmp"
    other.write_bytes(b"x")
    assert remove_stale_temps(tmp_path, "latest.pt") == [stale]
    assert not stale.exists() and other.exists()
