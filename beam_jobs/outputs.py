"""Where a job writes: checked before it starts, and cleaned up after it fails.

Beam's `WriteToText` deletes whatever matches its output name before it moves the new files in,
and a failed job leaves its `beam-temp-*` folders behind. So an output is refused before anything
runs when it is a folder, has glob characters, would be read as input (symlinks resolved on both
sides: an output written through a symlinked folder the input walk follows is read too), or
would replace existing files without `--overwrite`; and a failed job removes the temp folders it
created, only those.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from beam_jobs.inputs import GLOB_CHARS, Source
from digitflow.listing import walk
from digitflow.results import errors_path

log = logging.getLogger(__name__)


def file_prefix(path: str, shards: int) -> tuple[str, str]:
    """WriteToText's (prefix, suffix) for `path`: the path itself, or its stem and extension."""
    return (path, "") if shards == 1 else os.path.splitext(path)


def sharded_paths(path: str, shards: int) -> str:
    """The file, or the glob of the N files, that the results of `path` are written to."""
    if shards == 1:
        return path
    stem, suffix = file_prefix(path, shards)
    return f"{stem}-*-of-{shards:05d}{suffix}"


def refusal(output: str, shards: int, source: Source, overwrite: bool) -> str | None:
    """Why the job must not write to `output`, or None when it may."""
    if GLOB_CHARS.search(output):
        return f"--output {output} has glob characters (*?[); name one file"
    if output.endswith("/") or _is_folder(output):
        return f"--output {output} is a folder; name a file, e.g. {output.rstrip('/')}/results.csv"
    targets = [sharded_paths(output, shards), errors_path(output)]
    if _read_back(targets, source):
        return f"--output {output} would be read as part of the input {source.given}"
    existing = [found.path for target in targets for found in _matches(target)]
    folder = next((path for path in existing if _is_folder(path)), None)
    if folder is not None:
        return f"--output would replace the folder {folder}; name another file"
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        return f"--output would overwrite {existing[0]}{more}; pass --overwrite to replace them"
    return None


def temp_folders(output: str, shards: int) -> set[str]:
    """The `beam-temp-<name>-<uuid>` folders WriteToText makes next to this job's files."""
    found = set()
    for prefix in (file_prefix(output, shards)[0], errors_path(output)):
        parent, name = FileSystems.split(prefix)
        parent = parent or os.curdir
        temp = re.compile(f"beam-temp-{re.escape(name)}-[0-9a-f]{{32}}")
        if FileSystems.get_scheme(prefix) is None:
            names = os.listdir(parent) if os.path.isdir(parent) else []
        else:  # object stores have no folders, only the files in them
            inside = _matches(FileSystems.join(parent, f"beam-temp-{name}-*/**"))
            names = [found.path[len(parent) :].lstrip("/").split("/")[0] for found in inside]
        found |= {FileSystems.join(parent, n) for n in names if temp.fullmatch(n)}
    return found


def remove_temp_folders(folders: Iterable[str]) -> None:
    """Delete these temp folders (the ones a failed job created); a failure is only logged."""
    for folder in sorted(folders):
        local = FileSystems.get_scheme(folder) is None
        try:  # a local folder goes as a whole; an object store's by its prefix, `folder/`
            FileSystems.delete([folder if local else FileSystems.join(folder, "")])
        except OSError as error:
            log.warning("could not remove the temp folder %s: %s", folder, error)


def _read_back(targets: list[str], source: Source) -> bool:
    """Whether the input would list any of `targets` once written: by its own path, or, for a
    local input, through any folder its walk enters that is the target's nearest existing
    folder on disk (symlinks resolved on both sides; the input's folders are walked once)."""
    if any(source.covers(target) for target in targets):
        return True
    local = [target for target in targets if FileSystems.get_scheme(target) is None]
    if source.remote or not local or not os.path.isdir(source.root):
        return False
    entered: dict[tuple[int, int], list[str]] = {}
    for path in _folders(source.root):
        entered.setdefault(_key(path), []).append(path)
    for target in local:
        folder, rest = _existing_folder(os.path.abspath(target))
        listed = [os.path.join(path, rest) for path in entered.get(_key(folder), [])]
        if any(source.glob is None or source.covers(path) for path in listed):
            return True
    return False


def _folders(root: str) -> list[str]:
    """`root` and every folder under it that the input walk enters (symlinks followed)."""
    entered = [root]

    def enter(folder: str) -> bool:
        entered.append(folder)
        return True

    for _ in walk(root, into=enter):
        pass
    return entered


def _existing_folder(path: str) -> tuple[str, str]:
    """The nearest existing folder above the absolute `path`, and the rest of the path from it."""
    folder, rest = os.path.dirname(path), os.path.basename(path)
    while not os.path.isdir(folder):
        folder, name = os.path.split(folder)
        rest = os.path.join(name, rest)
    return folder, rest


def _key(folder: str) -> tuple[int, int]:
    """A folder's identity on disk, whatever path (through whatever symlinks) reaches it."""
    info = os.stat(folder)
    return info.st_dev, info.st_ino


def _matches(pattern: str) -> list[FileMetadata]:
    return FileSystems.match([pattern])[0].metadata_list


def _is_folder(path: str) -> bool:
    return FileSystems.get_scheme(path) is None and os.path.isdir(path)
