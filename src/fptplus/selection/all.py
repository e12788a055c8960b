"""The no-selection ablation: every token, in its natural order (token_ratio must be 1)."""

from __future__ import annotations

from . import Selector, register

register(Selector("all", "every token (no selection; token_ratio 1)", None))
