"""Kept so that ``from skyctl.destination import ...`` still works: the code is :mod:`skyctl.config.destination`."""

from __future__ import annotations

from .config.destination import FORMS, Destination, looks_like_destination, parse_destination

__all__ = ["Destination", "FORMS", "looks_like_destination", "parse_destination"]
