"""What plugin authors implement and import: the storage contract (:mod:`.backend`,
:mod:`.migration_ops`, :mod:`.options`), the sync transport and the protocol's messages
(:mod:`.transport`), the hooks (:mod:`.hookspecs`), the registries they fill
(:mod:`.registries`) and public helpers (:mod:`.helpers`, :mod:`.locks`). It builds on
:mod:`syncline.core.model` only."""
