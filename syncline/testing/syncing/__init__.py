"""The sync and trust suites' mixins, one module per concern; :mod:`syncline.testing.sync_suite`
and :mod:`syncline.testing.trust_suite` compose them."""
