"""The pure policy module: AWS KMS authorization semantics, with no store, HSM or I/O.

Used by the store (to authorize every API call) and by the planner and validator (to check
policies offline and to prove, before apply, that nobody is locked out).
"""

from kmsplan.policy.access import KEY_ACTIONS, AccessPath, can, who_can
from kmsplan.policy.conditions import CONDITION_KEYS, OPERATORS, Condition
from kmsplan.policy.document import (
    KMS_ACTIONS, Policy, PolicyError, PolicyProblem, Statement, check_policy_document,
    parse_policy, parse_policy_cached,
)
from kmsplan.policy.evaluate import (
    GRANT_OPERATIONS, Decision, Grant, KeyFacts, Principal, Request, authorize, lockout_check,
    unknown_principals,
)

__all__ = [
    "CONDITION_KEYS", "GRANT_OPERATIONS", "KEY_ACTIONS", "KMS_ACTIONS", "OPERATORS",
    "AccessPath", "Condition", "Decision", "Grant", "KeyFacts", "Policy", "PolicyError",
    "PolicyProblem", "Principal", "Request", "Statement", "authorize", "can",
    "check_policy_document", "lockout_check", "parse_policy", "parse_policy_cached",
    "unknown_principals", "who_can",
]
