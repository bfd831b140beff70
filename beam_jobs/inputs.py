"""The job's INPUT: what it names, how its entries are listed and read, which paths it covers.

INPUT is a local folder (walked by `digitflow.listing`: symlinked sub-folders followed, loops,
dangling links and the like reported), a local file, a local glob (Beam's syntax: `*` within a
name, `**` across folders, `?`, `[...]`; its fixed leading folder is walked and the paths
filtered), or an object-store path (gs://, s3://): one object, a prefix or a glob, listed with
Beam's `FileSystems.match`, each entry with its size. A local path that exists is taken
literally, even with `*?[` in it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from apache_beam.io.filesystem import CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems

from digitflow import locations
from digitflow.listing import (
    MAX_FILE_MIB,
    Entry,
    Kind,
    check_file_size,
    entry,
    is_image_name,
    walk,
)

GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Source:
    """A parsed INPUT. `root` is the local folder or file, the local glob's fixed leading
    folder, or the object-store pattern; `glob` is a local glob's absolute pattern."""

    given: str
    root: str
    glob: str | None = None
    remote: bool = False

    @classmethod
    def parse(cls, given: str) -> Source:
        if FileSystems.get_scheme(given) is not None:  # Beam lists it: Beam's rule
            return cls(given, _remote_pattern(given), remote=True)
        path = os.path.abspath(os.path.expanduser(given))
        if os.path.lexists(path) or not GLOB_CHARS.search(given):
            return cls(given, path)
        fixed = os.path.dirname(GLOB_CHARS.split(path, maxsplit=1)[0])
        return cls(given, fixed, glob=path)

    def entries(self) -> Iterator[Entry]:
        """Every entry the input names, each once; nothing for a path that is not there."""
        if self.remote:
            for found in FileSystems.match([self.root])[0].metadata_list:
                kind = Kind.IMAGE if is_image_name(found.path) else Kind.OTHER
                yield Entry(found.path, kind, size=found.size_in_bytes)
        elif self.glob is not None:
            if os.path.isdir(self.root):
                for found in walk(self.root, into=self._may_hold):
                    unreadable = found.kind is Kind.UNREADABLE
                    if self._matches(found.path) or (unreadable and self._may_hold(found.path)):
                        yield found
        elif os.path.isdir(self.root):
            yield from walk(self.root)
        elif os.path.lexists(self.root):
            yield entry(self.root)

    def covers(self, path: str) -> bool:
        """Whether `path` (existing or not) would be listed as part of this input."""
        if self.remote:
            return re.match(FileSystem.translate_pattern(self.root), path) is not None
        if self.glob is not None:
            return self._matches(os.path.abspath(path))
        real, root = os.path.realpath(path), os.path.realpath(self.root)
        return real == root or os.path.commonpath([real, root]) == root

    @cached_property
    def _glob_regex(self) -> re.Pattern[str]:
        return re.compile(FileSystem.translate_pattern(self.glob or ""))

    def _matches(self, path: str) -> bool:
        return self._glob_regex.match(path) is not None

    def _may_hold(self, folder: str) -> bool:
        """Whether a local glob can match something under `folder`, compared name by name."""
        if folder == self.root:
            return True
        names = os.path.relpath(folder, self.root).split(os.sep)
        parts = os.path.relpath(self.glob or "", self.root).split(os.sep)
        for depth, name in enumerate(names):
            if "**" in parts[depth]:
                return True
            last = depth == len(parts) - 1  # the glob's last part names files, not folders
            if last or not re.match(FileSystem.translate_pattern(parts[depth]), name):
                return False
        return True


def read_input(path: bytes, max_mib: int = MAX_FILE_MIB, size: int | None = None) -> bytes:
    """The content of one listed file (a path as `os.fsencode` gives it), of at most `max_mib`
    MiB: a larger one is refused by its size, unread (UnreadableError, `too large: ...`).

    Local files and objects (s3://, gs://) are read by `digitflow.locations`, objects through
    the worker's one client: Beam's S3 file system builds a new client for every open. With
    `size`, the entry's size from the listing, a gs:// read is one request instead of two.
    Other schemes Beam serves are read through Beam's file systems.
    """
    name = os.fsdecode(path)
    if not locations.is_uri(name) or locations.is_object_uri(name):
        return locations.read(path, max_mib, size=size)
    check_file_size(FileSystems.get_filesystem(name).size(name), max_mib)
    with FileSystems.open(name, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


def _remote_pattern(source: str) -> str:
    """A Beam file pattern for one object, a glob, or a prefix (with or without its `/`)."""
    if FileSystems.exists(source):
        return _escape(source)
    if GLOB_CHARS.search(source):
        return source
    return f"{_escape(source.rstrip('/'))}/**"


def _escape(literal: str) -> str:
    """Quote glob characters in a literal path, so `scans [old]/` matches only itself."""
    return GLOB_CHARS.sub(lambda m: f"[{m.group(0)}]", literal)
