"""The backend suite's mixins, one module per concern; :mod:`syncline.testing.backend_suite`
composes them into :class:`~syncline.testing.backend_suite.BackendSuite`."""
