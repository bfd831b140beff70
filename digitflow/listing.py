"""List and read input files ourselves, so that every entry under a folder is accounted for.

`walk(folder)` yields one `Entry` per thing found: an image file (by extension), another file
(ignored by the callers), or an entry that cannot be read, with the reason: a dangling symlink,
a symlink loop, a path too long for the system, a folder that cannot be listed, or an image name
that is not a regular file (a FIFO, device or socket is never opened). Symlinked sub-folders are
followed; a folder that leads back to one of its own parents is reported as a loop, by
(st_dev, st_ino), as `find -L` does.

Paths are `str` as the `os` module gives them (undecodable bytes as surrogates, `os.fsdecode`);
`path_text` turns one into printable, lossless text and `path_bytes` turns that back.
Files are read only up to a size (`MAX_FILE_MIB`), checked before a byte is read.
Standard library only, so it stays cheap to import.
"""

from __future__ import annotations

import enum
import errno
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)  # the formats digitflow.preprocess decodes

_NON_REGULAR = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)
MAX_FILE_MIB = 64
"""The largest file read, in MiB (`--max-file-mib`): far more than any scan, far less than RAM."""
_MIB = 1 << 20
# Non-blocking: opening a FIFO returns at once instead of waiting for a writer.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_ESCAPE = re.compile(rb"\\(\\|x[0-9a-f]{2})")


class Kind(enum.Enum):
    IMAGE = "image"  # a regular file with an image extension
    OTHER = "other"  # any other file: not for us
    UNREADABLE = "unreadable"  # cannot be read or listed; `Entry.reason` says why


@dataclass(frozen=True)
class Entry:
    path: str
    kind: Kind
    reason: str = ""  # for UNREADABLE: `unreadable: ...`
    size: int | None = None  # bytes, where the listing learnt them for free (object stores)


class UnreadableError(Exception):
    """A path that cannot be read as a file; `str()` is a short reason (`unreadable: ...`,
    `too large: ...`)."""


def is_image_name(path: str) -> bool:
    """True for the extensions the preprocessing reads, in any letter case."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def walk(folder: str, into: Callable[[str], bool] | None = None) -> Iterator[Entry]:
    """Every entry under `folder`, recursively; sub-folders only where `into(path)` is true.

    Within a folder, files come first, by name, then each sub-folder's entries.
    """
    stack = [(folder, frozenset({_key(os.stat(folder))}))]
    while stack:
        current, parents = stack.pop()
        try:
            with os.scandir(current) as listing:
                names = sorted(child.name for child in listing)
        except OSError as error:
            yield Entry(current, Kind.UNREADABLE, f"unreadable: cannot list folder: {_why(error)}")
            continue
        folders = []
        for name in names:
            path = os.path.join(current, name)
            try:
                info = os.stat(path)
            except OSError as error:
                yield Entry(path, Kind.UNREADABLE, f"unreadable: {_stat_failure(path, error)}")
                continue
            if not stat.S_ISDIR(info.st_mode):
                yield _file_entry(path, info)
            elif _key(info) in parents:
                yield Entry(path, Kind.UNREADABLE, "unreadable: symlink loop (leads to a parent)")
            elif into is None or into(path):
                folders.append((path, parents | {_key(info)}))
        stack.extend(reversed(folders))


def entry(path: str) -> Entry:
    """The entry for one path given explicitly (a file, not searched)."""
    try:
        info = os.stat(path)
    except OSError as error:
        return Entry(path, Kind.UNREADABLE, f"unreadable: {_stat_failure(path, error)}")
    return _file_entry(path, info)


def read_file(path: str | bytes | os.PathLike[str], max_mib: int = MAX_FILE_MIB) -> bytes:
    """The content of a regular file of at most `max_mib` MiB; UnreadableError for anything
    else, never blocking.

    The file is opened non-blocking and checked after opening, so a FIFO that replaced a file
    since it was listed is refused instead of waiting forever for a writer; its size is checked
    then too, before anything is read.
    """
    try:
        with os.fdopen(os.open(path, _READ_FLAGS), "rb") as handle:
            info = os.fstat(handle.fileno())
            if what := _non_regular(info.st_mode):
                raise UnreadableError(f"unreadable: not a regular file ({what})")
            check_file_size(info.st_size, max_mib)
            return handle.read()
    except OSError as error:
        raise UnreadableError(f"unreadable: {_why(error)}") from None


def check_file_size(size: int, max_mib: int) -> None:
    """UnreadableError (`too large: ...`) when `size` bytes are more than `max_mib` MiB."""
    if size > max_mib * _MIB:
        raise UnreadableError(f"too large: {size / _MIB:,.1f} MiB (limit {max_mib:,} MiB)")


def path_text(path: str | bytes) -> str:
    """Printable, lossless text for a path: UTF-8 as is, `\\` as `\\\\`, other bytes as `\\xNN`."""
    raw = os.fsencode(path).replace(b"\\", b"\\\\")
    return raw.decode("utf-8", "backslashreplace")


def path_bytes(text: str) -> bytes:
    """The path `path_text` wrote, as bytes."""
    return _ESCAPE.sub(_unescape, text.encode("utf-8"))


def _file_entry(path: str, info: os.stat_result) -> Entry:
    if not is_image_name(path):
        return Entry(path, Kind.OTHER)
    what = _non_regular(info.st_mode)
    if what:
        return Entry(path, Kind.UNREADABLE, f"unreadable: not a regular file ({what})")
    return Entry(path, Kind.IMAGE)


def _non_regular(mode: int) -> str:
    """'' for a regular file, else what it is."""
    if stat.S_ISREG(mode):
        return ""
    return next((what for test, what in _NON_REGULAR if test(mode)), "special file")


def _unescape(match: re.Match[bytes]) -> bytes:
    escaped = match.group(1)
    return b"\\" if escaped == b"\\" else bytes([int(escaped[1:], 16)])


def _stat_failure(path: str, error: OSError) -> str:
    if error.errno == errno.ENOENT and os.path.islink(path):
        return "dangling symlink"
    return _why(error)


def _why(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symlink loop"
    if error.errno == errno.ENAMETOOLONG:
        return "path too long"
    return (error.strerror or type(error).__name__).lower()


def _key(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino
