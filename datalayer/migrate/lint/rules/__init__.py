"""datalayer's lint rules, one small function each, grouped by what they look at.

Rule names are squawk's where squawk has the rule; each module registers its
rules in :data:`RULES` when imported.
"""

from __future__ import annotations

from . import columns, constraints, destructive, indexes, transactions
from ._registry import RULES, Rule, Statement, rule

__all__ = ["RULES", "Rule", "Statement", "rule"]

_ = (columns, constraints, destructive, indexes, transactions)  # imported to register
