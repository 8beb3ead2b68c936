"""The one writer for every file the project writes: checkpoints, ONNX graphs, TensorRT plans,
images, JSON, CSV, HTML.

Each write goes to a temp file in the target folder, is flushed and fsynced, its size is
checked against what was meant to be written, and it is renamed over the target, which must be
a regular file or absent (a device node, FIFO, socket or folder at the target is refused, never
replaced). A reader sees the old file or the whole new one, never half. New files get the
usual permissions (0666 minus the umask). Every OSError becomes one OutputError line that names
the path; a failed write leaves no temp file behind.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from s2i_fast.errors import OutputError

TMP_SUFFIX = ".tmp"


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def current_umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # not thread-safe, only where /proc is missing
    os.umask(old)
    return old


def file_kind(mode: int) -> str | None:
    """None for a regular file; otherwise what it is ("a named pipe", ...), for messages that
    refuse to read or replace it."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def stat_regular(path: str | os.PathLike, error: type[Exception], missing: str,
                 wrong: str) -> os.stat_result:
    """os.stat of a file about to be read, refusing anything but a regular file (a FIFO or a
    device would block or never end): `error` with "PATH: {missing}" when it does not exist,
    "PATH: cannot read (...)" when it cannot be stat'ed, "PATH: is a named pipe, {wrong}"."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    kind = file_kind(st.st_mode)
    if kind:
        raise error(f"{path}: is {kind}, {wrong}")
    return st


def temp_dir_beside(target: str | os.PathLike) -> Path:
    """A fresh staging folder next to `target` (same file system, so it can be renamed into
    place), with the usual 0777-minus-umask permissions; OutputError naming the target."""
    target = Path(target)
    ensure_dir(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        tmp.chmod(0o777 & ~current_umask())
    except OSError as e:
        raise OutputError(f"could not write {target}: {_reason(e)}") from e
    return tmp


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create a folder (and its parents) or accept an existing one; OutputError otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"could not create folder {path}: a file of that name exists") from None
    except NotADirectoryError:
        raise OutputError(f"could not create folder {path}: a parent is not a folder") from None
    except OSError as e:
        raise OutputError(f"could not create folder {path}: {_reason(e)}") from e
    if not path.is_dir():
        raise OutputError(f"could not create folder {path}: it exists and is not a folder")
    return path


def check_target(path: str | os.PathLike) -> Path:
    """The path, if a write may replace it: absent, or a regular file (links followed)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path
    except NotADirectoryError:
        raise OutputError(f"could not write {path}: a parent is not a folder") from None
    except OSError as e:
        raise OutputError(f"could not write {path}: {_reason(e)}") from e
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"could not write {path}: it is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"could not write {path}: it exists and is not a regular file "
                          "(a device, pipe or socket is never replaced)")
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write data to path atomically (see the module docstring); returns the path."""
    path = check_target(path)
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise OutputError(f"could not write {path}: {_reason(e)}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            view = memoryview(data)
            written = 0
            while written < len(view):  # a short write is retried, then reported
                n = f.write(view[written:])
                if not n:
                    raise OSError(28, "short write (no space left?)")
                written += n
            f.flush()
            os.fsync(f.fileno())
            size = os.fstat(f.fileno()).st_size
            if size != len(data):
                raise OSError(5, f"wrote {size} of {len(data)} bytes")
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
        check_target(path)  # still not a special file (it may have appeared meanwhile)
        os.replace(tmp, path)
    except OutputError:
        _unlink(tmp)
        raise
    except OSError as e:
        _unlink(tmp)
        raise OutputError(f"could not write {path}: {_reason(e)}") from e
    _fsync_dir(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def write_image(path: str | os.PathLike, image, format: str | None = None, **params) -> Path:  # noqa: ANN001
    """A PIL image or a uint8 array ([H, W] or [H, W, 3]) as PNG/JPEG (format from the suffix)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    fmt = format or {".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower(), "PNG")
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return write_bytes(path, buf.getvalue())


def append_text(path: str | os.PathLike, text: str) -> Path:
    """Append to a log file (metrics.jsonl): created with the umask, regular files only, the
    whole line written or OutputError (a line cut by a kill is skipped by its reader)."""
    path = check_target(path)
    ensure_dir(path.parent)
    data = text.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                     0o666)
    except OSError as e:
        raise OutputError(f"could not write {path}: {_reason(e)}") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OutputError(f"could not write {path}: it is not a regular file")
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            if not n:
                raise OSError(28, "short write (no space left?)")
            view = view[n:]
    except OSError as e:
        raise OutputError(f"could not write {path}: {_reason(e)}") from e
    finally:
        os.close(fd)
    return path


def remove_stale_temps(folder: str | os.PathLike, name: str) -> list[Path]:
    """Delete temp files this writer left for `name` in folder (after a kill mid-write)."""
    removed = []
    for p in Path(folder).glob(f".{name}.*{TMP_SUFFIX}"):
        if p.is_file():
            _unlink(p)
            removed.append(p)
    return removed


def _unlink(p: str | os.PathLike) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
