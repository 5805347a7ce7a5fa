"""The framework: entities, the store, migrations and client sync (see docs/architecture.md).

Nothing here knows the sync server (syncline.server) exists; an import contract checks it
(``lint-imports``, configured in pyproject.toml).
"""
