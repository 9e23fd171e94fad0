"""Policy: postures and decisions, approval credentials, trusted keys, replay policy and limits,
the policy audit record. The run gate is :mod:`byteor.policy.gate` (imported on use)."""

from __future__ import annotations

from .approvals import (
    CAPABILITIES,
    CHECKS,
    ApprovalPayload,
    VerifiedApproval,
    decode_credential,
    issue_credential,
    read_credential,
    required_capabilities,
    side_effect_stages,
    verify_credential,
)
from .decisions import (
    ALLOW,
    DECISIONS,
    DEFAULT_TABLE,
    DENY,
    DRY_RUN_ONLY,
    POSTURES,
    REQUIRE_APPROVAL,
    PolicyTable,
    PostureRules,
    decide,
    load_policy_file,
    policy_table,
)
from .keys import KeySet, RefreshConfig, TrustedKey, load_key_set, load_runtime_keys
from .replay import ReplayBudget, ReplayLimits, replay_policy

__all__ = [
    "ALLOW",
    "CAPABILITIES",
    "CHECKS",
    "DECISIONS",
    "DEFAULT_TABLE",
    "DENY",
    "DRY_RUN_ONLY",
    "POSTURES",
    "REQUIRE_APPROVAL",
    "ApprovalPayload",
    "KeySet",
    "PolicyTable",
    "PostureRules",
    "RefreshConfig",
    "ReplayBudget",
    "ReplayLimits",
    "TrustedKey",
    "VerifiedApproval",
    "decide",
    "decode_credential",
    "issue_credential",
    "load_key_set",
    "load_policy_file",
    "load_runtime_keys",
    "policy_table",
    "read_credential",
    "replay_policy",
    "required_capabilities",
    "side_effect_stages",
    "verify_credential",
]
