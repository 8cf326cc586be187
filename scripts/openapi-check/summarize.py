#!/usr/bin/env python3
"""Merge the tally JSON files written by proxy.py (--tally-json) and print one tally.

    python summarize.py tally-a.json tally-b.json ...
"""
import collections
import json
import sys


def main(paths):
    per_op = collections.defaultdict(collections.Counter)
    groups = collections.OrderedDict()
    passthrough = 0
    for p in paths:
        with open(p, encoding="utf-8") as f:
            d = json.load(f)
        for op, c in d["per_operation"].items():
            per_op[op].update(c)
        for g in d["groups"]:
            k = (g["kind"], g["side"], g["operation"], g["key"])
            if k in groups:
                groups[k]["count"] += g["count"]
            else:
                groups[k] = dict(g)
        passthrough += d.get("passthrough", 0)

    cols = ["requests", "request_ok", "request_violation", "request_expected_invalid",
            "responses", "response_ok", "response_violation", "undocumented_status", "upstream_error"]
    heads = ["req", "req-ok", "req-bad", "req-exp", "resp", "resp-ok", "resp-bad", "undoc", "dropped"]
    print("=== OpenAPI conformance tally (%d proxy run(s)) ===" % len(paths))
    print("%-20s " % "operation" + " ".join("%8s" % h for h in heads))
    tot = collections.Counter()
    for op in sorted(per_op):
        c = per_op[op]
        tot.update(c)
        print("%-20s " % op[:20] + " ".join("%8d" % c.get(k, 0) for k in cols))
    print("%-20s " % "TOTAL" + " ".join("%8d" % tot.get(k, 0) for k in cols))
    print("passthrough (unvalidated, e.g. /_sandbox/*): %d" % passthrough)
    order = {"violation": 0, "undocumented-status": 1, "advisory": 2, "expected-invalid": 3,
             "expected-invalid-but-valid": 4, "unspecified-path": 5, "validator-limitation": 6}
    for kind in sorted({k[0] for k in groups}, key=lambda k: order.get(k, 9)):
        print()
        print("--- %s ---" % kind)
        for k, g in groups.items():
            if k[0] != kind:
                continue
            ex = g["example"]
            print("%4d x %-8s %-16s %s" % (g["count"], g["side"], g["operation"], g["key"]))
            print("         e.g. %s %s -> %s (client %s)" % (ex["method"], ex["path"], ex["status"], ex.get("client", "-")))
    n_viol = sum(g["count"] for k, g in groups.items() if k[0] == "violation")
    print()
    print("violations: %d (request side: %d, response side: %d); undocumented statuses: %d; advisories: %d" % (
        n_viol,
        sum(g["count"] for k, g in groups.items() if k[0] == "violation" and k[1] == "request"),
        sum(g["count"] for k, g in groups.items() if k[0] == "violation" and k[1] == "response"),
        sum(g["count"] for k, g in groups.items() if k[0] == "undocumented-status"),
        sum(g["count"] for k, g in groups.items() if k[0] == "advisory")))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
