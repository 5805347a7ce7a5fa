"""Storage backends bundled with syncline, registered through the ``syncline`` entry points."""
