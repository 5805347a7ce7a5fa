"""The data model: entities and their types, queries, the value domain, cattrs conversion,
errors and clocks. It knows no backend, store, plugin manager or sync (docs/architecture.md)."""
