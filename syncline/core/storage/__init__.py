"""The local store without sync: transactions that record the tables they touch
(:class:`.local.LocalStore`), typed repositories and DAOs, watched queries, configuration,
migrations and schema dumps. It announces writes (``LocalStore.on_write``) and migrations
(``MigrationListener``) to whoever listens and knows nothing of the sync layer above it."""
