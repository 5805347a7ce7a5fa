"""Helpers for plugin authors: what bundled backends use, public so that others can too."""

from __future__ import annotations

from syncline.core.model.convert import store_json as store_json
from syncline.core.model.convert import store_json_as_text as store_json_as_text
from syncline.core.model.cooperate import in_loop_greenlet as in_loop_greenlet
from syncline.core.model.schema import is_json as is_json
from syncline.core.spi.options import scheme_of as scheme_of
from syncline.core.spi.options import split_url as split_url
from syncline.core.spi.options import url_path as url_path

__all__ = ["in_loop_greenlet", "is_json", "scheme_of", "split_url", "store_json",
           "store_json_as_text", "url_path"]
