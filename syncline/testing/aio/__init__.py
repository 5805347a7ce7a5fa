"""The shared suites' cases through ``syncline.aio``: see :mod:`syncline.testing.aio.suite`."""
