"""Errors raised by the model store. Every message is one line meant for a human."""


class StoreError(Exception):
    """Base class: the operation failed and nothing in the store was changed."""


class VersionNotFound(StoreError):
    """The version number does not exist (or was never completely registered)."""


class AliasNotFound(StoreError):
    """The alias has never been set."""


class InvalidReference(StoreError):
    """The reference is not a version number, an alias name or a `.keras` path."""


class CorruptVersion(StoreError):
    """A version's metadata or model file is missing, unreadable or does not match."""


class InvalidModel(StoreError):
    """A model file that must not serve: not loadable in safe mode, wrong shapes, bad output."""


class PromotionConflict(StoreError):
    """Compare-and-swap failed: the alias no longer points where the caller expected."""


class WriteConflict(Exception):
    """A conditional write lost: the file or object changed (or was taken) since it was read.
    Raised by the storage layer to the store, which tries again or says so in a StoreError."""
