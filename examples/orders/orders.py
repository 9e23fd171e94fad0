"""Python stages for the orders example: plain functions, found beside orders.kv.

``enrich`` is a map stage (one argument: it returns the new message, or None to drop it);
``keep_valuable`` is declared read-only, so it is a filter (None drops, anything else keeps).
"""

import json

import byteor


def enrich(msg: bytes) -> bytes | None:
    """Parse one JSON order, add its total and a tier; drop what is not a valid order."""
    try:
        order = json.loads(msg)
        total = round(float(order["qty"]) * float(order["price"]), 2)
    except (ValueError, KeyError, TypeError):
        return None
    order["total"] = total
    order["tier"] = "gold" if total >= 100 else "standard"
    return json.dumps(order, separators=(",", ":")).encode()


@byteor.stage(readonly=True)
def keep_valuable(msg: bytes) -> bytes | None:
    """Only orders worth at least 20 go on."""
    return msg if json.loads(msg)["total"] >= 20 else None
