"""``approval``: credentials bound to a spec hash.

``hash`` prints the spec hash alone on one line. ``keygen`` makes an Ed25519 key pair (private key
PEM, mode 0600; public key as a key-set entry), ``issue`` signs a credential for one spec and one
posture and prints it, ``verify`` runs every check in order and explains the verdict (exit 0 when
it verifies, 4 when it does not).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
from datetime import timedelta
from typing import Any

from .._errors import ApprovalError, PolicyRefused, UsageError
from .._fileio import ensure_private_dir, write_bytes_exclusive, write_text_atomic
from .._formats import parse_duration
from ._common import (
    add_env_option,
    add_json_option,
    add_spec_option,
    emit_json,
    load_spec,
    posture,
    stdout_console,
)


def configure(parser: argparse.ArgumentParser, verb: str) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p_hash = sub.add_parser(
        "hash", help="print the spec hash (sha256:<hex> of the canonical KV)",
        description="Print the spec hash alone on one line: sha256:<lowercase hex> of the canonical KV "
                    "(`describe --canonical`). It is the identity of a pipeline version that approvals, "
                    "audits, snapshots and bundles bind to. Exit codes: 0 printed, 2 no spec or missing "
                    "file, 3 the spec cannot be decoded.")
    add_spec_option(p_hash)

    p_key = sub.add_parser("keygen", help="make an Ed25519 signing key pair")
    p_key.add_argument("--out", required=True, metavar="DIR",
                       help="directory for <kid>.pem and <kid>.pub.json")
    p_key.add_argument("--kid", help="key id (default: k-<first 16 hex of the public key's SHA-256>)")
    p_key.add_argument("--key-set", metavar="FILE",
                       help="also add the public key to this key-set file (created if missing)")
    add_json_option(p_key)

    p_issue = sub.add_parser("issue", help="sign an approval credential for a spec and a posture")
    p_issue.add_argument("--key", required=True, metavar="PEM", help="the private key from `approval keygen`")
    add_spec_option(p_issue)
    add_env_option(p_issue)
    p_issue.add_argument("--capabilities", metavar="LIST",
                         help="comma-separated: http_post, exec, replay_execute "
                              "(default: what the spec needs)")
    p_issue.add_argument("--ttl", default="1h", help="lifetime: seconds, or N with s/m/h/d (default 1h)")
    p_issue.add_argument("--kid", help="key id (default: the key file name without .pem)")
    p_issue.add_argument("--org-id", default="local")
    p_issue.add_argument("--project-id", default="local")
    p_issue.add_argument("--environment-id", default=None, help="default: the posture")
    p_issue.add_argument("--issued-by", default=None, help="default: the current user")
    p_issue.add_argument("--approval-id", default=None, help="default: a random UUID")
    p_issue.add_argument("--out", metavar="FILE", help="also write the credential to FILE (mode 0600)")

    p_ver = sub.add_parser("verify", help="verify a credential against a spec and a posture")
    add_spec_option(p_ver)
    add_env_option(p_ver)
    p_ver.add_argument("--approval", metavar="PATH|CRED",
                       help="credential file or value (default: approval.cred next to the spec)")
    p_ver.add_argument("--approval-key-set", metavar="FILE",
                       help="trusted keys (default: signing_keys.json next to the spec)")
    p_ver.add_argument("--replay-execute", action="store_true",
                       help="also require the replay_execute capability")
    add_json_option(p_ver)


def run(args: argparse.Namespace) -> int:
    if args.action == "hash":
        loaded = load_spec(args, validate=False)
        print(loaded.hash)
        return 0
    if args.action == "keygen":
        return _keygen(args)
    if args.action == "issue":
        return _issue(args)
    if args.action == "verify":
        return _verify(args)
    raise UsageError(f"unknown approval action {args.action!r}")


def _write_private(path: str, data: bytes) -> None:
    try:
        write_bytes_exclusive(path, data, mode=0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; refusing to overwrite a key or credential") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def _keygen(args: argparse.Namespace) -> int:
    import hashlib

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..policy.keys import TrustedKey, load_key_set

    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = args.kid or "k-" + hashlib.sha256(raw).hexdigest()[:16]
    if not re.fullmatch(r"[A-Za-z0-9._-]+", kid):
        raise UsageError(f"--kid must use only letters, digits, '.', '_' and '-', got {kid!r}")
    ensure_private_dir(args.out)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    priv_path = os.path.join(args.out, f"{kid}.pem")
    pub_path = os.path.join(args.out, f"{kid}.pub.json")
    entry = TrustedKey.from_raw(kid, raw).to_json()
    _write_private(priv_path, pem)
    write_text_atomic(pub_path, json.dumps(entry, indent=2) + "\n")
    if args.key_set:
        keys: list[dict[str, str]] = []
        if os.path.exists(args.key_set):
            keys = load_key_set(args.key_set).to_json()
        keys = [k for k in keys if k["kid"] != kid] + [entry]
        write_text_atomic(args.key_set, json.dumps({"keys": keys}, indent=2) + "\n")
    result = {"kid": kid, "private_key": priv_path, "public_key": pub_path, "entry": entry,
              "key_set": args.key_set}
    if args.json:
        emit_json(result)
    else:
        con = stdout_console()
        con.print(f"kid          {kid}")
        con.print(f"private key  {priv_path}  (mode 0600: keep it secret)")
        con.print(f"public key   {pub_path}")
        if args.key_set:
            con.print(f"key set      {args.key_set}  (now {len(keys)} keys)")
    return 0


def _parse_ttl(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError:
        raise UsageError("--ttl must be a positive number of seconds or N followed by s, m, h or d; "
                         f"got {text!r}") from None


def _issue(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..policy.approvals import CAPABILITIES, issue_credential, required_capabilities

    loaded = load_spec(args, validate=False)
    try:
        with open(args.key, "rb") as fh:
            pem = fh.read()
    except FileNotFoundError:
        raise UsageError(f"{args.key}: private key file does not exist") from None
    except OSError as exc:
        raise UsageError(f"{args.key}: cannot read private key: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise UsageError(f"{args.key}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{args.key}: not an Ed25519 private key")
    if args.capabilities is None:
        caps: list[str] = list(required_capabilities(loaded.spec))
    else:
        caps = [c.strip() for c in args.capabilities.split(",") if c.strip()]
    for cap in caps:
        if cap not in CAPABILITIES:
            raise UsageError(f"--capabilities: unknown capability {cap!r}; known: {', '.join(CAPABILITIES)}")
    kid = args.kid or os.path.basename(args.key).removesuffix(".pem")
    credential = issue_credential(
        key, kid=kid, spec_hash=loaded.hash, posture=posture(args), capabilities=caps,
        ttl=_parse_ttl(args.ttl), org_id=args.org_id, project_id=args.project_id,
        environment_id=args.environment_id, issued_by=args.issued_by or _user(),
        approval_id=args.approval_id)
    if args.out:
        _write_private(args.out, (credential + "\n").encode("ascii"))
    print(credential)
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def _verify(args: argparse.Namespace) -> int:
    from ..policy.approvals import CHECKS, read_credential, required_capabilities, verify_credential
    from ..policy.decisions import policy_table
    from ..policy.keys import load_runtime_keys

    loaded = load_spec(args, validate=False)
    spec_dir = os.path.dirname(os.path.abspath(loaded.path))
    env = posture(args)
    required = required_capabilities(loaded.spec, replay_execute=args.replay_execute)
    found = read_credential(args.approval, spec_dir)
    if found is None:
        raise PolicyRefused("no approval credential: pass --approval, or put approval.cred next to the spec")
    credential, origin = found
    failure: ApprovalError | None = None
    details: dict[str, Any] = {}
    try:
        keys = load_runtime_keys(spec_dir, args.approval_key_set)
        verified = verify_credential(credential, keys=keys, spec_hash=loaded.hash, posture=env,
                                     required=required, max_lifetime=policy_table().rules(env).approval_max_lifetime)
        details = verified.summary()
    except ApprovalError as exc:
        failure = exc
    failed_at = CHECKS.index(failure.check) if failure else len(CHECKS)
    checks = [{"check": name,
               "result": "ok" if i < failed_at else ("failed" if i == failed_at else "not reached")}
              for i, name in enumerate(CHECKS)]
    result = {"ok": failure is None, "spec": loaded.path, "spec_hash": loaded.hash, "posture": env,
              "credential": origin, "required_capabilities": list(required), "checks": checks,
              "error": str(failure) if failure else None, "approval": details or None}
    if args.json:
        emit_json(result)
    else:
        from rich.table import Table

        con = stdout_console()
        table = Table(title=f"approval verification ({origin})")
        table.add_column("check")
        table.add_column("result")
        for row in checks:
            style = {"ok": "green", "failed": "bold red"}.get(row["result"], "dim")
            table.add_row(row["check"], f"[{style}]{row['result']}[/]")
        con.print(table)
        con.print(f"spec {loaded.hash}  posture {env}  requires {', '.join(required) or 'nothing'}")
        if failure is None:
            con.print(f"[green]verified[/]: approval {details['approval_id']} by {details['issued_by']}, "
                      f"key {details['kid']}, expires {details['expires_at']}")
    if failure is not None:
        raise failure
    return 0
