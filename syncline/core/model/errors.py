"""The exception hierarchy: every error syncline raises is a :class:`SynclineError`."""

from __future__ import annotations


class SynclineError(Exception):
    """Base class of every error raised by syncline."""


class ConfigurationError(SynclineError):
    """A configuration value, file or argument is wrong."""


class PluginError(SynclineError):
    """A plugin could not be loaded or registered."""


class UnknownSchemeError(ConfigurationError, LookupError):
    """No backend or transport is registered for a URL scheme."""


class EntityDefinitionError(SynclineError):
    """An entity class is declared wrongly (unsupported type, no primary key, ...)."""


class BackendError(SynclineError):
    """A storage backend failed."""


class BackendUnavailableError(BackendError):
    """The storage cannot be reached or opened."""


class IntegrityError(BackendError):
    """A write broke a constraint (duplicate key, unique key, foreign key)."""


class TransactionConflictError(BackendError):
    """A transaction lost a race (serialization failure, deadlock); running it again may work.

    ``Store.run_transaction`` retries these a bounded number of times.
    """

    retryable = True


class NotFoundError(SynclineError, LookupError):
    """A record, table or other named thing does not exist."""


class QueryError(SynclineError):
    """A query names an unknown field or uses an operator wrongly."""


class SerializationError(SynclineError, ValueError):
    """A value cannot be converted to or from its stored form."""


class TransactionError(BackendError):
    """A transaction was used wrongly (closed store, wrong thread, ...)."""


class MigrationError(SynclineError):
    """A schema migration failed or the stored schema is not what the code expects."""


class StaleSchemaError(MigrationError):
    """Another process migrated the store past this code's schema version: this code may no
    longer write to it (its rows would have the old shape)."""

    def __init__(self, url: str, stored: int, code: int) -> None:
        super().__init__(
            f"the store at {url} was migrated to schema version {stored} by another process; "
            f"this code is at version {code} and may not write to it any more (nothing was "
            f"written): restart the application with the code of version {stored}")
        self.stored = stored
        self.code = code


class InvalidCursorError(SerializationError):
    """A pull cursor the server did not issue, or one beyond its sequence.

    The server answers it with a 4xx (HTTP: 400, code ``invalid_cursor``); the client then
    pulls from the start again, keeping its queue.
    """


class TransportError(SynclineError):
    """A sync transport failed."""


class AuthenticationError(TransportError):
    """Credentials were missing or refused."""


class ConflictError(SynclineError):
    """A change conflicts with another one."""
