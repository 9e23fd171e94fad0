"""Write N JSON orders, one per line, to stdout; every 50th line is broken on purpose."""

import json
import random
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
rng = random.Random(7)
skus = ["apple", "pear", "plum", "fig", "kiwi"]
out = sys.stdout.write
for i in range(n):
    if i % 50 == 49:
        out('{"id": %d, "qty": "lots"\n' % i)
        continue
    order = {"id": i, "sku": rng.choice(skus), "qty": rng.randint(1, 20), "price": round(rng.uniform(0.5, 12), 2)}
    out(json.dumps(order) + "\n")
