"""Non-storage plugins bundled with syncline (transports, the pytest plugin)."""
