"""`modelyard keys` and `modelyard usage`: talk to a running gateway's admin API (stdlib HTTP)."""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    if not args.master_key:
        raise SystemExit("modelyard: set --master-key or MODELYARD_MASTER_KEY")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(args.url.rstrip("/") + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {args.master_key}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (admin URL from user)
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        raise SystemExit(f"modelyard: {method} {path} failed: HTTP {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise SystemExit(f"modelyard: cannot reach {args.url}: {exc.reason}") from None
    return json.loads(raw) if raw else None


def keys_command(args: argparse.Namespace) -> int:
    if args.action == "list":
        for k in _call(args, "GET", "/admin/keys")["data"]:
            state = "revoked" if k.get("revoked") else "active"
            print(f"{k['id']}\tteam={k.get('team') or '-'}\tmodels={k.get('models') or '*'}"
                  f"\tlimits={k.get('limits')}\t{state}")
        return 0
    if args.action == "revoke":
        if not args.id:
            raise SystemExit("modelyard keys revoke: --id is required")
        _call(args, "DELETE", f"/admin/keys/{urllib.parse.quote(args.id)}")
        print(f"revoked {args.id}")
        return 0
    body: dict[str, Any] = {"team": args.team}
    if args.id:
        body["id"] = args.id
    if args.models:
        body["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.rpm or args.tpm:
        body["limits"] = {"rpm": args.rpm, "tpm": args.tpm}
    if args.expires_at:
        body["expires_at"] = args.expires_at
    created = _call(args, "POST", "/admin/keys", body)
    print(json.dumps(created, indent=2))
    print("the secret `key` above is shown only once: store it now", file=sys.stderr)
    return 0


def usage_command(args: argparse.Namespace) -> int:
    from gateway.accounting.query import format_rows

    params = {"group_by": args.group_by}
    for name in ("start", "end", "key", "team", "model", "provider", "user"):
        value = getattr(args, name)
        if value:
            params[{"start": "from", "end": "to"}.get(name, name)] = value
    rows = _call(args, "GET", "/admin/usage?" + urllib.parse.urlencode(params))["data"]
    group_by = [g for g in args.group_by.split(",") if g]
    print(format_rows(rows, args.format, group_by=group_by))
    return 0
