"""Postures, the four decisions, the default table and the operator policy file.

A side-effecting stage (``http_post:*``, ``exec:*``) gets exactly one decision at startup:
``Allow`` (perform), ``DryRunOnly`` (suppress and record), ``RequireApproval`` (refuse to start
until a verified approval covers it) or ``Deny`` (refuse). :func:`decide` computes it from the
posture's :class:`PostureRules`, the stage family, the dry-run flag, the replay mode and whether an
approval verified; the allowlists (``BYTEOR_EXEC_ALLOWLIST``, ``BYTEOR_HTTP_POST_ALLOWLIST``) are
applied before it by the gate and always win.

The default table (docs/policy.md) can be replaced per posture by an operator policy file (JSON, see
:func:`load_policy_file` and ``docs/policy.md``) named by ``--policy-file`` or ``BYTEOR_POLICY_FILE``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from .._errors import UsageError
from .._fileio import read_regular_file
from .._formats import parse_duration

__all__ = [
    "ALLOW",
    "DECISIONS",
    "DEFAULT_MAX_APPROVAL_LIFETIME",
    "DEFAULT_TABLE",
    "DENY",
    "DRY_RUN_ONLY",
    "POLICY_FILE_ENV",
    "POSTURES",
    "REPLAY_MODES",
    "REPLAY_POLICIES",
    "REQUIRE_APPROVAL",
    "RULES",
    "PolicyTable",
    "PostureRules",
    "decide",
    "load_policy_file",
    "policy_table",
]

ALLOW = "Allow"
DRY_RUN_ONLY = "DryRunOnly"
REQUIRE_APPROVAL = "RequireApproval"
DENY = "Deny"
DECISIONS = (ALLOW, DRY_RUN_ONLY, REQUIRE_APPROVAL, DENY)
#: Decisions that refuse a run.
REFUSING = frozenset({DENY, REQUIRE_APPROVAL})

POSTURES = ("dev", "staging", "prod")
#: Side-effect rules: the policy for live execution of a family in a posture.
RULES = ("allow", "require_approval", "deny")
REPLAY_POLICIES = ("disabled", "dry_run_only", "allowed")
REPLAY_MODES = ("dry_run", "execute")
FAMILIES = ("http_post", "exec")
POLICY_FILE_ENV = "BYTEOR_POLICY_FILE"
#: Approvals may live at most this long unless the policy file sets ``approval_max_lifetime``.
DEFAULT_MAX_APPROVAL_LIFETIME = timedelta(days=30)
POLICY_FILE_VERSION = 1
MAX_POLICY_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class PostureRules:
    """The rules of one posture.

    ``side_effects`` applies to every family unless ``families`` overrides it; ``replay`` says
    whether replay may run at all (``disabled``), only suppressed (``dry_run_only``), or may
    execute (``allowed``); ``replay_execute`` is the rule for execute-mode replay when allowed.
    """

    posture: str
    side_effects: str
    replay: str = "allowed"
    replay_execute: str = "require_approval"
    families: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: The longest approval lifetime (``expires_at - issued_at``) accepted; None: no cap.
    approval_max_lifetime: timedelta | None = DEFAULT_MAX_APPROVAL_LIFETIME

    def rule_for(self, family: str) -> str:
        return self.families.get(family, self.side_effects)

    def to_json(self) -> dict[str, Any]:
        cap = self.approval_max_lifetime
        return {"side_effects": self.side_effects, "families": dict(self.families),
                "replay": self.replay, "replay_execute": self.replay_execute,
                "approval_max_lifetime": None if cap is None else int(cap.total_seconds())}


@dataclass(frozen=True)
class PolicyTable:
    """Rules for every posture and where they came from (``default`` or the policy file path)."""

    postures: Mapping[str, PostureRules]
    source: str = "default"

    def rules(self, posture: str) -> PostureRules:
        if posture not in self.postures:
            raise UsageError(f"unknown posture {posture!r}; expected one of {', '.join(POSTURES)}")
        return self.postures[posture]

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source,
                "postures": {name: rules.to_json() for name, rules in self.postures.items()}}


DEFAULT_TABLE = PolicyTable(MappingProxyType({
    "dev": PostureRules("dev", "allow"),
    "staging": PostureRules("staging", "require_approval"),
    "prod": PostureRules("prod", "require_approval"),
}))


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise UsageError(f"{where} must be one of {'|'.join(choices)}, got {value!r}")
    return value


def _lifetime(raw: Any, where: str) -> timedelta | None:
    if raw is None:
        return None
    try:
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ValueError(raw)
        return parse_duration(str(raw))
    except ValueError:
        raise UsageError(f"{where} must be seconds or N with s/m/h/d (or null for no cap), got {raw!r}") from None


def load_policy_file(path: str) -> PolicyTable:
    """Read an operator policy file; postures and fields it leaves out keep their defaults.

    Format::

        {"policy_version": 1,
         "postures": {"staging": {"side_effects": "allow", "families": {"exec": "deny"},
                                  "replay": "dry_run_only", "replay_execute": "require_approval",
                                  "approval_max_lifetime": "8h"}}}

    ``approval_max_lifetime`` is seconds or ``N`` with ``s``/``m``/``h``/``d``, or null for no cap.

    Unknown keys and values are errors (:class:`UsageError`, exit 2) naming the file and the field.
    """
    try:
        raw = read_regular_file(path, MAX_POLICY_FILE_BYTES)
        if len(raw) > MAX_POLICY_FILE_BYTES:
            raise UsageError(f"{path}: policy file is larger than {MAX_POLICY_FILE_BYTES} bytes")
        obj = json.loads(raw)
    except FileNotFoundError:
        raise UsageError(f"{path}: policy file does not exist") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read policy file: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: policy file is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: a policy file is a JSON object")
    unknown = sorted(set(obj) - {"policy_version", "postures"})
    if unknown:
        raise UsageError(f"{path}: unknown field `{unknown[0]}`")
    version = obj.get("policy_version")
    if version != POLICY_FILE_VERSION or isinstance(version, bool):
        raise UsageError(f"{path}: `policy_version` must be {POLICY_FILE_VERSION}, got {version!r}")
    postures = obj.get("postures", {})
    if not isinstance(postures, dict):
        raise UsageError(f"{path}: `postures` must be an object keyed by posture")
    table = dict(DEFAULT_TABLE.postures)
    for name, body in postures.items():
        where = f"{path}: postures.{name}"
        if name not in POSTURES:
            raise UsageError(f"{where}: unknown posture; expected one of {', '.join(POSTURES)}")
        if not isinstance(body, dict):
            raise UsageError(f"{where} must be an object")
        extra = sorted(set(body) - {"side_effects", "families", "replay", "replay_execute", "approval_max_lifetime"})
        if extra:
            raise UsageError(f"{where}: unknown field `{extra[0]}`")
        rules = table[name]
        if "side_effects" in body:
            rules = replace(rules, side_effects=_choice(body["side_effects"], RULES, f"{where}.side_effects"))
        if "replay" in body:
            rules = replace(rules, replay=_choice(body["replay"], REPLAY_POLICIES, f"{where}.replay"))
        if "replay_execute" in body:
            rules = replace(rules, replay_execute=_choice(body["replay_execute"], RULES,
                                                          f"{where}.replay_execute"))
        if "approval_max_lifetime" in body:
            rules = replace(rules, approval_max_lifetime=_lifetime(body["approval_max_lifetime"],
                                                                   f"{where}.approval_max_lifetime"))
        if "families" in body:
            fams = body["families"]
            if not isinstance(fams, dict):
                raise UsageError(f"{where}.families must be an object keyed by family")
            parsed: dict[str, str] = {}
            for fam, rule in fams.items():
                if fam not in FAMILIES:
                    raise UsageError(f"{where}.families: unknown family `{fam}`; expected "
                                     f"{' or '.join(FAMILIES)}")
                parsed[fam] = _choice(rule, RULES, f"{where}.families.{fam}")
            rules = replace(rules, families=MappingProxyType(parsed))
        table[name] = rules
    return PolicyTable(MappingProxyType(table), path)


def policy_table(policy_file: str | None = None) -> PolicyTable:
    """The effective table: ``policy_file``, else ``$BYTEOR_POLICY_FILE``, else the defaults."""
    path = policy_file or os.environ.get(POLICY_FILE_ENV) or None
    return load_policy_file(path) if path else DEFAULT_TABLE


def decide(rules: PostureRules, family: str, *, dry_run: bool, replay_mode: str | None,
           approved: bool, approval_problem: str | None = None) -> tuple[str, str]:
    """The decision for one side-effecting stage and the reason, in words an operator can act on.

    Order: a ``deny`` rule for the family; replay (``disabled`` → Deny; ``dry_run`` mode or the
    ``dry_run_only`` policy → DryRunOnly); the ``--dry-run`` flag → DryRunOnly; then the rule
    (``allow`` → Allow, ``require_approval`` → Allow only with a verified approval).
    ``approval_problem`` explains why there is no verified approval (missing, or the check that
    failed). The allowlists are checked by the gate before this and win over everything here.
    """
    posture = rules.posture
    rule = rules.rule_for(family)
    if rule == "deny":
        return DENY, f"policy denies {family} in posture {posture}"
    if replay_mode is not None:
        if replay_mode not in REPLAY_MODES:
            raise UsageError(f"replay mode must be one of {'|'.join(REPLAY_MODES)}, got {replay_mode!r}")
        if rules.replay == "disabled":
            return DENY, f"replay is disabled in posture {posture}"
        if replay_mode == "dry_run":
            return DRY_RUN_ONLY, "replay in dry_run mode: the side effect is recorded, not performed"
        if rules.replay == "dry_run_only":
            return DRY_RUN_ONLY, (f"replay policy of posture {posture} is dry_run_only: execute mode "
                                  "is recorded, not performed")
        if dry_run:
            return DRY_RUN_ONLY, "--dry-run: the side effect is recorded, not performed"
        rule = "deny" if rules.replay_execute == "deny" else rules.replay_execute
        what = "execute-mode replay"
        needed = f"{family}, replay_execute"
    else:
        if dry_run:
            return DRY_RUN_ONLY, "--dry-run: the side effect is recorded, not performed"
        what = family
        needed = family
    if rule == "deny":
        return DENY, f"policy denies {what} in posture {posture}"
    if rule == "allow":
        return ALLOW, f"posture {posture} allows {what} without approval"
    if approved:
        return ALLOW, f"posture {posture} requires approval for {what}: a verified approval covers it"
    problem = approval_problem or "no approval credential"
    return REQUIRE_APPROVAL, (f"posture {posture} requires an approval carrying {needed}: {problem}")
