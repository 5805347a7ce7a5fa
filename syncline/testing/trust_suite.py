"""Sync you can trust: order, retries, poison, quarantine and cursors, on any client backend.

Each test is a named regression of a finding of issue 13 (a write committed on a device
reaches the server exactly once, in order, whatever the network does, and never costs another
write its way). Subclass :class:`TrustSuite` and provide a ``store_url`` fixture, as for
:mod:`syncline.testing.sync_suite`. The suite is composed of one mixin per concern
(``syncline.testing.syncing.*``).
"""

from __future__ import annotations

from syncline.testing.syncing.base import TrustFixtures
from syncline.testing.syncing.entities import ENTITIES, Comment, Likes, Post, TickingClock
from syncline.testing.syncing.ordering import OrderSuite
from syncline.testing.syncing.poison import PoisonSuite
from syncline.testing.syncing.pulling import PullSuite


class TrustSuite(OrderSuite, PoisonSuite, PullSuite):
    """Subclass and provide a ``store_url`` fixture (a fresh, empty store each time)."""


__all__ = ["ENTITIES", "Comment", "Likes", "OrderSuite", "PoisonSuite", "Post", "PullSuite",
           "TickingClock", "TrustFixtures", "TrustSuite"]
