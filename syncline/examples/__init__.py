"""Example applications shipped with syncline."""
