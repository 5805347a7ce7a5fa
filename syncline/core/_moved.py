"""The old flat ``syncline.core`` modules, kept for one release as names for their new places
in the layers (docs/architecture.md). Each old module is the new one under its old name, and
importing it warns."""

from __future__ import annotations

import importlib
import sys
import warnings


def alias(old: str, new: str) -> None:
    """Make module ``old`` the module ``new`` (same object: every name, private ones too) and
    warn that it moved."""
    warnings.warn(f"{old} moved to {new}; import it from there ({old} goes in the next "
                  f"release, see docs/architecture.md)", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
