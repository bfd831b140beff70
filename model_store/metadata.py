"""What a version records about itself: metrics, provenance, library versions, who acted.

The record itself is the typed `model_store.card.ModelCard`; this module fills in provenance.
"""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from model_store.card import Metrics, ModelCard

LIBRARIES = ("digitflow", "keras", "tensorflow", "numpy", "apache-beam", "prefect")


def now_iso() -> str:
    """Current UTC time as ISO 8601 with seconds, e.g. `2025-01-31T02:00:00+00:00`."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a model depends on, read without importing them."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_version() -> str | None:
    """Git commit of the running code (`<sha>-dirty` with local changes), None when unknown."""
    repo = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def default_actor() -> str:
    """Who is acting when no flow run is: `cli:<user>@<host>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def build_card(
    *,
    metrics: Metrics | dict[str, Any],
    params: dict[str, Any],
    architecture: str,
    dataset_checksum: str,
    flow_run_id: str | None = None,
    **parts: Any,
) -> ModelCard:
    """A model card for `ModelStore.register`, provenance filled in (created now, this code's
    commit, the installed library versions); `parts` are the card's other fields (`identity`,
    `spans`, `holdout`, `reference`, `gate`, `robustness`, ...). InvalidCard on a bad value."""
    return ModelCard(
        metrics=metrics,  # type: ignore[arg-type]  # a dict is read as Metrics.from_dict
        params=params,
        architecture=architecture,
        dataset_checksum=dataset_checksum,
        flow_run_id=flow_run_id,
        created_at=now_iso(),
        code_version=code_version(),
        library_versions=library_versions(),
        **parts,
    )


def build_metadata(
    *,
    metrics: dict[str, Any],
    params: dict[str, Any],
    architecture: str,
    dataset_checksum: str,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """`build_card(...).to_dict()`: the card as a dict, checked, for callers that add keys."""
    card = build_card(
        metrics=metrics,
        params=params,
        architecture=architecture,
        dataset_checksum=dataset_checksum,
        flow_run_id=flow_run_id,
    )
    return card.to_dict()


def complete(metadata: dict[str, Any]) -> dict[str, Any]:
    """Copy of `metadata` with every standard field present; given values win."""
    record = dict(metadata)
    record.setdefault("metrics", {})
    record.setdefault("params", {})
    record.setdefault("dataset_checksum", None)
    record.setdefault("flow_run_id", None)
    record.setdefault("created_at", now_iso())
    if "code_version" not in record:
        record["code_version"] = code_version()
    if "library_versions" not in record:
        record["library_versions"] = library_versions()
    return record


def to_json(value: Any) -> bytes:
    """Strict JSON (no NaN) that also accepts numpy scalars and arrays; raises ValueError."""
    try:
        text = json.dumps(value, indent=2, sort_keys=True, allow_nan=False, default=_plain)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    return (text + "\n").encode()


def _plain(value: Any) -> Any:
    """numpy values (anything with `tolist`) as plain Python; everything else is rejected."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
