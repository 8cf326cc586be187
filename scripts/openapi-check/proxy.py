#!/usr/bin/env python3
"""Validating reverse proxy for the Komfortkasse API (OpenAPI 3.1 spec).

Forwards every request to an upstream (normally the kksync sandbox) and checks
each request and each response under the API prefix with openapi-core, an
OpenAPI implementation independent of kksync. Violations go to a JSON-lines
file; a tally is printed on SIGINT/SIGTERM (and written to --tally-json).

    python proxy.py --spec komfortkasse-openapi.yaml \
        --listen 127.0.0.1:4011 --upstream http://127.0.0.1:4010 \
        --prefix /api/v2 --log violations.jsonl

Paths outside --prefix (e.g. /_sandbox/tick) are passed through unvalidated.

Kinds of record written to the log ("side" is request or response):
  violation          openapi-core rejected the request / response
  undocumented-status  the response status is not declared for the operation;
                     kept apart because the sandbox's 500 is fault injection
  advisory           not a schema violation under OpenAPI 3.1 semantics, but
                     worth a look: readOnly properties sent in a request body,
                     undeclared query parameters, amounts with more than two
                     decimals
  upstream-error     the upstream dropped the connection (fault injection);
                     the proxy drops the client connection as well
  expected-invalid   request findings for a request the driver marked as
                     deliberately invalid (header X-OAPI-Check-Expect: invalid)
  unspecified-path   the request's path/method is not in the spec (the answer is
                     only checked for an Error-shaped body)
  validator-limitation  openapi-core cannot validate it (multipart binary parts)
"""

import argparse
import collections
import decimal
import http.client
import http.server
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.templating.responses.exceptions import ResponseNotFound
from werkzeug.datastructures import Headers, ImmutableMultiDict
import yaml

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailers", "transfer-encoding", "upgrade", "content-length",
}
AMOUNT_KEYS = {"amount", "exchangeRate"}
# A test driver may mark a deliberately invalid request (error triggers) with this
# header; its request-side findings are then tallied as expected-invalid, not as
# violations. The header is not forwarded.
EXPECT_HEADER = "X-OAPI-Check-Expect"
EXCERPT = 1500


# --------------------------------------------------------------------------
# openapi-core protocol objects


class OARequest:
    def __init__(self, host_url, path, method, query, headers, body):
        self.host_url = host_url
        self.path = path
        self.method = method.lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(query),
            header=Headers(headers),
            cookie=ImmutableMultiDict(),
        )
        self.body = body if body else None
        self.content_type = (dict((k.lower(), v) for k, v in headers).get("content-type") or "").lower()


class OAResponse:
    def __init__(self, status, headers, data):
        self.status_code = status
        self.headers = Headers(headers)
        self.data = data if data else None
        self.content_type = (self.headers.get("content-type") or "").lower()


# --------------------------------------------------------------------------
# helpers


def excerpt(data):
    if data is None:
        return None
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return data if len(data) <= EXCERPT else data[:EXCERPT] + "...(%d chars)" % len(data)


def norm_path(path_elems):
    out = []
    for p in path_elems:
        out.append("[*]" if isinstance(p, int) else "." + str(p))
    return "$" + "".join(out)


def describe(exc):
    """Flatten an openapi-core exception into (summary, details[], group_key)."""
    details = []
    keys = []
    limitation = []

    def walk(e, depth=0):
        if e is None or depth > 6:
            return
        name = type(e).__name__
        schema_errors = getattr(e, "schema_errors", None)
        if schema_errors:
            for se in schema_errors:
                # jsonschema.ValidationError; descend into best leaf errors
                leaves = list(iter_leaves(se))
                for leaf in leaves:
                    jp = norm_path(leaf.absolute_path)
                    if (leaf.validator == "type" and isinstance(leaf.instance, (bytes, bytearray))
                            and isinstance(leaf.schema, dict) and leaf.schema.get("format") == "binary"):
                        limitation.append(jp)
                    details.append({
                        "at": "$" + "".join(
                            "[%d]" % p if isinstance(p, int) else "." + str(p)
                            for p in leaf.absolute_path),
                        "keyword": leaf.validator,
                        "schema_path": "/".join(str(x) for x in leaf.absolute_schema_path),
                        "message": leaf.message[:400],
                    })
                    keys.append("%s %s %s" % (jp, leaf.validator, short_schema_msg(leaf)))
            return
        sub = getattr(e, "errors", None)
        if sub and not isinstance(sub, (str, bytes)):
            for s in sub:
                walk(s, depth + 1)
            if not details:
                keys.append(name)
            return
        if e.__cause__ is not None:
            keys_before = len(keys)
            walk(e.__cause__, depth + 1)
            if len(keys) == keys_before:
                keys.append("%s: %s" % (name, str(e)[:200]))
            else:
                keys[keys_before:] = ["%s > %s" % (name, k) for k in keys[keys_before:]]
            return
        keys.append("%s: %s" % (name, str(e)[:200]))
        details.append({"message": "%s: %s" % (name, str(e)[:400])})

    walk(exc)
    summary = "%s: %s" % (type(exc).__name__, str(exc)[:300])
    # openapi-core hands multipart file parts to the schema validator as bytes, so a
    # `type: string, format: binary` part always fails; that is the tool, not the client
    only_limitation = bool(limitation) and len(limitation) == len(details)
    return summary, details, sorted(set(keys)), only_limitation


def iter_leaves(err):
    ctx = getattr(err, "context", None)
    if ctx:
        for c in ctx:
            yield from iter_leaves(c)
    else:
        yield err


def short_schema_msg(leaf):
    v = leaf.validator
    if v in ("required",):
        m = re.search(r"'([^']+)' is a required property", leaf.message)
        return "required:" + (m.group(1) if m else "?")
    if v in ("type", "enum", "pattern", "const", "format", "minimum", "minLength"):
        return "%s=%s" % (v, json.dumps(leaf.validator_value, default=str)[:80])
    return v


def json_decimal(data):
    try:
        return json.loads(data, parse_float=decimal.Decimal)
    except Exception:
        return None


def find_amount_precision(obj, path="$"):
    """Yield (path, raw) for amounts with more than two decimals or non-numbers."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = "%s.%s" % (path, k)
            if k in AMOUNT_KEYS and isinstance(v, decimal.Decimal):
                if k == "amount" and -v.as_tuple().exponent > 2:
                    yield p, str(v)
            yield from find_amount_precision(v, p)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from find_amount_precision(v, "%s[%d]" % (path, i))


# --------------------------------------------------------------------------
# spec-side lookups (operation ids, declared query params, readOnly props)


class SpecIndex:
    def __init__(self, spec_dict):
        self.spec = spec_dict
        self.routes = []  # (regex, template, literal_count)
        for tmpl, item in spec_dict.get("paths", {}).items():
            segs = tmpl.strip("/").split("/")
            rx = "^/" + "/".join(
                "[^/]+" if s.startswith("{") else re.escape(s) for s in segs) + "$"
            lit = sum(1 for s in segs if not s.startswith("{"))
            self.routes.append((re.compile(rx), tmpl, lit))
        self.routes.sort(key=lambda r: -r[2])

    def resolve(self, node):
        seen = 0
        while isinstance(node, dict) and "$ref" in node and seen < 20:
            ref = node["$ref"]
            cur = self.spec
            for part in ref.lstrip("#/").split("/"):
                cur = cur[part]
            node = cur
            seen += 1
        return node

    def match(self, method, path):
        for rx, tmpl, _ in self.routes:
            if rx.match(path):
                item = self.spec["paths"][tmpl]
                op = item.get(method.lower())
                if op is not None:
                    return tmpl, op, item
        return None, None, None

    def declared_query(self, item, op):
        names = set()
        for p in list(item.get("parameters", [])) + list(op.get("parameters", [])):
            p = self.resolve(p)
            if p.get("in") == "query":
                names.add(p["name"])
        return names

    def undeclared_props(self, schema, value, path="$"):
        """Yield JSON paths of object properties the schema does not declare (the spec
        allows them, as it sets no additionalProperties: false, but they show drift)."""
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return
        if isinstance(value, list) and "items" in schema:
            for i, v in enumerate(value):
                yield from self.undeclared_props(schema["items"], v, "%s[%d]" % (path, i))
            return
        props = dict(schema.get("properties") or {})
        for sub in schema.get("allOf", []):
            props.update((self.resolve(sub) or {}).get("properties") or {})
        if props and isinstance(value, dict):
            for k, v in value.items():
                if k not in props:
                    yield "%s.%s" % (path, k)
                else:
                    yield from self.undeclared_props(props[k], v, "%s.%s" % (path, k))

    def response_schema(self, op, status):
        r = (op.get("responses") or {}).get(str(status))
        r = self.resolve(r) if r else None
        return ((r or {}).get("content") or {}).get("application/json", {}).get("schema")

    def read_only_hits(self, schema, value, path="$"):
        """Yield JSON paths of readOnly properties present in a request value."""
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return
        for sub in schema.get("allOf", []):
            yield from self.read_only_hits(sub, value, path)
        if schema.get("type") == "array" and isinstance(value, list):
            for i, v in enumerate(value):
                yield from self.read_only_hits(schema.get("items", {}), v, "%s[%d]" % (path, i))
        props = schema.get("properties")
        if props and isinstance(value, dict):
            for k, v in value.items():
                if k in props:
                    ps = props[k]
                    if isinstance(ps, dict) and ps.get("readOnly"):
                        yield "%s.%s" % (path, k)
                    else:
                        yield from self.read_only_hits(ps, v, "%s.%s" % (path, k))


# --------------------------------------------------------------------------
# state


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.per_op = collections.defaultdict(lambda: collections.Counter())
        self.groups = collections.OrderedDict()  # key -> {count, example}
        self.passthrough = 0

    def count(self, op, what):
        with self.lock:
            self.per_op[op][what] += 1

    def group(self, kind, side, op, key, example):
        gk = (kind, side, op, key)
        with self.lock:
            g = self.groups.get(gk)
            if g is None:
                self.groups[gk] = {"count": 1, "example": example}
            else:
                g["count"] += 1

    def as_dict(self):
        with self.lock:
            return {
                "per_operation": {k: dict(v) for k, v in sorted(self.per_op.items())},
                "groups": [
                    {"kind": k[0], "side": k[1], "operation": k[2], "key": k[3],
                     "count": v["count"], "example": v["example"]}
                    for k, v in self.groups.items()
                ],
                "passthrough": self.passthrough,
            }

    COLS = [("requests", "req"), ("request_ok", "req-ok"), ("request_violation", "req-bad"),
            ("request_expected_invalid", "req-exp"), ("responses", "resp"),
            ("response_ok", "resp-ok"), ("response_violation", "resp-bad"),
            ("undocumented_status", "undoc"), ("upstream_error", "dropped")]

    def render(self):
        d = self.as_dict()
        lines = ["", "=== OpenAPI conformance tally ==="]
        lines.append("%-20s " % "operation" + " ".join("%8s" % h for _, h in self.COLS))
        tot = collections.Counter()
        for op, c in d["per_operation"].items():
            lines.append("%-20s " % op[:20] + " ".join("%8d" % c.get(k, 0) for k, _ in self.COLS))
            tot.update(c)
        lines.append("%-20s " % "TOTAL" + " ".join("%8d" % tot.get(k, 0) for k, _ in self.COLS))
        lines.append("passthrough (unvalidated): %d" % d["passthrough"])
        if d["groups"]:
            lines.append("")
            lines.append("--- grouped findings ([kind] side operation: count x key) ---")
            for g in sorted(d["groups"], key=lambda g: (g["kind"], g["side"], g["operation"])):
                lines.append("[%s] %s %s: %d x %s" % (
                    g["kind"], g["side"], g["operation"], g["count"], g["key"]))
        else:
            lines.append("no findings")
        return "\n".join(lines)


# --------------------------------------------------------------------------
# proxy


def make_handler(cfg):
    app, idx, tally, log_lock, logf = cfg["app"], cfg["index"], cfg["tally"], cfg["log_lock"], cfg["logf"]
    up = urllib.parse.urlsplit(cfg["upstream"])
    up_host, up_port = up.hostname, up.port or 80
    prefix = cfg["prefix"].rstrip("/")
    server_url = cfg["server_url"].rstrip("/")
    server_path = urllib.parse.urlsplit(server_url).path.rstrip("/")
    host_url = server_url[: len(server_url) - len(server_path)] if server_path else server_url

    def log(rec):
        rec["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        line = json.dumps(rec, ensure_ascii=False, default=str)
        with log_lock:
            logf.write(line + "\n")
            logf.flush()

    def record(kind, side, op, method, path, status, key, error, details, body, client="-"):
        """key may be a list: one log line, one tally group per distinct key."""
        keys = key if isinstance(key, list) else [key]
        ex = {"method": method, "path": path, "status": status, "client": client,
              "error": error, "details": details[:10], "body": excerpt(body)}
        log(dict(kind=kind, side=side, operation=op, key=keys if len(keys) > 1 else keys[0], **ex))
        for k in keys:
            tally.group(kind, side, op, k, ex)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "oapi-check-proxy"

        def log_message(self, fmt, *args):  # quiet
            if cfg["verbose"]:
                sys.stderr.write("proxy: " + fmt % args + "\n")

        def _read_body(self):
            te = (self.headers.get("transfer-encoding") or "").lower()
            if "chunked" in te:
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            n = int(self.headers.get("content-length") or 0)
            return self.rfile.read(n) if n else b""

        def _handle(self):
            method = self.command
            body = self._read_body()
            split = urllib.parse.urlsplit(self.path)
            raw_path = split.path
            validate = raw_path == prefix or raw_path.startswith(prefix + "/")

            # ---- forward
            fwd_headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
            fwd_headers = [(k, v) for k, v in fwd_headers if k.lower() not in ("host", EXPECT_HEADER.lower())]
            fwd_headers.append(("Host", "%s:%d" % (up_host, up_port)))
            if body or method in ("POST", "PUT", "PATCH"):
                fwd_headers.append(("Content-Length", str(len(body))))

            # ---- request validation (before forwarding, independent of the answer)
            op_name = None
            oreq = None
            unspecified = False
            op_spec = None
            client = (self.headers.get("user-agent") or "-").split(" ")[0]
            expect = (self.headers.get(EXPECT_HEADER) or "").strip().lower()
            if validate:
                api_path = raw_path[len(prefix):] or "/"
                dec_path = api_path  # openapi-core matches the raw (percent-encoded) path
                query = urllib.parse.parse_qsl(split.query, keep_blank_values=True)
                tmpl, op, item = idx.match(method, urllib.parse.unquote(api_path))
                op_spec = op
                op_name = (op or {}).get("operationId") or ("%s %s (no operation)" % (method, api_path))
                oreq = OARequest(host_url, server_path + dec_path, method, query,
                                 list(self.headers.items()), body)
                tally.count(op_name, "requests")
                errs = list(app.iter_request_errors(oreq))
                unspecified = any(isinstance(e, (PathNotFound, OperationNotFound)) for e in errs)
                described = [describe(e) for e in errs]
                real = [d for d in described if not d[3]]
                for d in described:
                    if d[3]:
                        record("validator-limitation", "request", op_name, method, self.path, None,
                               d[2], d[0], d[1], body, client)
                if real and expect == "invalid":
                    tally.count(op_name, "request_expected_invalid")
                    for summary, details, keys, _ in real:
                        record("expected-invalid", "request", op_name, method, self.path, None,
                               keys, summary, details, body, client)
                elif real and unspecified:
                    tally.count(op_name, "request_unspecified_path")
                    for summary, details, keys, _ in real:
                        record("unspecified-path", "request", op_name, method, self.path, None,
                               keys, summary, details, body, client)
                elif real:
                    tally.count(op_name, "request_violation")
                    for summary, details, keys, _ in real:
                        record("violation", "request", op_name, method, self.path, None,
                               keys, summary, details, body, client)
                else:
                    tally.count(op_name, "request_ok")
                    if expect == "invalid":
                        record("expected-invalid-but-valid", "request", op_name, method, self.path,
                               None, "marked invalid but validated", "", [], body, client)
                # advisories
                if op is not None:
                    declared = idx.declared_query(item, op)
                    for name, _ in query:
                        if name not in declared:
                            record("advisory", "request", op_name, method, self.path, None,
                                   "undeclared query parameter %s" % name,
                                   "query parameter %r is not declared for %s" % (name, op_name), [], None, client)
                    rb = idx.resolve(op.get("requestBody") or {})
                    sch = (rb.get("content") or {}).get("application/json", {}).get("schema")
                    val = json_decimal(body) if body else None
                    if sch is not None and val is not None:
                        for p in idx.read_only_hits(sch, val):
                            record("advisory", "request", op_name, method, self.path, None,
                                   "readOnly property sent: " + re.sub(r"\[\d+\]", "[*]", p),
                                   "readOnly property present in request body at %s" % p, [], body, client)
                    if sch is not None and val is not None:
                        for p in sorted(set(re.sub(r"\[\d+\]", "[*]", q) for q in idx.undeclared_props(sch, val))):
                            record("advisory", "request", op_name, method, self.path, None,
                                   "undeclared property sent: " + p,
                                   "property not declared in the request schema: %s" % p, [], body, client)
                    if val is not None:
                        for p, raw in find_amount_precision(val):
                            record("advisory", "request", op_name, method, self.path, None,
                                   "amount with >2 decimals at " + re.sub(r"\[\d+\]", "[*]", p),
                                   "%s = %s" % (p, raw), [], body, client)
            else:
                with tally.lock:
                    tally.passthrough += 1

            conn = http.client.HTTPConnection(up_host, up_port, timeout=cfg["timeout"])
            try:
                conn.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in fwd_headers:
                    conn.putheader(k, v)
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                rbody = resp.read()
                rstatus = resp.status
                rreason = resp.reason
                rheaders = resp.getheaders()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if validate:
                    tally.count(op_name, "upstream_error")
                    log(dict(kind="upstream-error", side="response", operation=op_name,
                             method=method, path=self.path, status=None,
                             error="%s: %s" % (type(e).__name__, e)))
                # mirror the fault: drop the client connection without an answer
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            conn.close()

            # ---- response validation
            if validate and unspecified:
                tally.count(op_name, "responses_unspecified_path")
                rb = json_decimal(rbody) if rbody else None
                shape = "Error-shaped body" if isinstance(rb, dict) and isinstance(rb.get("error"), str) else "body not Error-shaped: %r" % excerpt(rbody)
                record("unspecified-path", "response", op_name, method, self.path, rstatus,
                       "answered %d, %s" % (rstatus, shape), "path/operation not in the spec", [], rbody, client)
            elif validate:
                tally.count(op_name, "responses")
                oresp = OAResponse(rstatus, rheaders, rbody)
                errs = list(app.iter_response_errors(oreq, oresp))
                undoc = [e for e in errs if isinstance(e, ResponseNotFound)]
                real = [e for e in errs if not isinstance(e, ResponseNotFound)]
                if undoc:
                    tally.count(op_name, "undocumented_status")
                    err_body = json_decimal(rbody) if rbody else None
                    # still check the Error shape of an undocumented error answer
                    shape = "body matches Error schema" if (
                        isinstance(err_body, dict) and isinstance(err_body.get("error"), str)
                    ) else "body does NOT match Error schema"
                    record("undocumented-status", "response", op_name, method, self.path, rstatus,
                           "status %d not declared (%s)" % (rstatus, shape),
                           "%s: %s" % (type(undoc[0]).__name__, undoc[0]), [], rbody, client)
                if real:
                    tally.count(op_name, "response_violation")
                    for e in real:
                        summary, details, keys, _ = describe(e)
                        record("violation", "response", op_name, method, self.path, rstatus,
                               keys, summary, details, rbody, client)
                elif not undoc:
                    tally.count(op_name, "response_ok")
                val = json_decimal(rbody) if rbody else None
                rsch = idx.response_schema(op_spec, rstatus) if op_spec is not None else None
                if rsch is not None and val is not None:
                    for p in sorted(set(re.sub(r"\[\d+\]", "[*]", q) for q in idx.undeclared_props(rsch, val))):
                        record("advisory", "response", op_name, method, self.path, rstatus,
                               "undeclared property returned: " + p,
                               "property not declared in the response schema: %s" % p, [], None, client)
                if val is not None:
                    for p, raw in find_amount_precision(val):
                        record("advisory", "response", op_name, method, self.path, rstatus,
                               "amount with >2 decimals at " + re.sub(r"\[\d+\]", "[*]", p),
                               "%s = %s" % (p, raw), [], None, client)
                if cfg["trace"] is not None:
                    with log_lock:
                        cfg["trace"].write(json.dumps({
                            "method": method, "path": self.path, "operation": op_name,
                            "client": client, "expect": expect or None,
                            "request_headers": {k: v for k, v in self.headers.items()
                                                if k.lower() != "x-komfortkasse-api-key"},
                            "request": body.decode("utf-8", "replace"), "status": rstatus,
                            "response": rbody.decode("utf-8", "replace")}, ensure_ascii=False) + "\n")
                        cfg["trace"].flush()

            # ---- answer the client
            self.send_response_only(rstatus, rreason)
            for k, v in rheaders:
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(rbody)))
            self.end_headers()
            if method != "HEAD" and rbody:
                self.wfile.write(rbody)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    return Handler


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_spec = os.path.normpath(os.path.join(
        here, "..", "..", "..", "shared", "reference", "komfortkasse-openapi.yaml"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=default_spec)
    ap.add_argument("--listen", default="127.0.0.1:4011", help="host:port (port 0 = any free port)")
    ap.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:4010 (no path)")
    ap.add_argument("--prefix", default="/api/v2", help="API path prefix on the wire")
    ap.add_argument("--server-url", default="http://127.0.0.1:4010",
                    help="a server URL from the spec's servers list; requests are validated as if sent to it")
    ap.add_argument("--log", default="violations.jsonl")
    ap.add_argument("--trace", default=None, help="also write every validated exchange to this JSON-lines file")
    ap.add_argument("--tally-json", default=None, help="write the tally as JSON here at exit")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    with open(args.spec, encoding="utf-8") as f:
        spec_dict = yaml.safe_load(f)
    servers = [s["url"].rstrip("/") for s in spec_dict.get("servers", [])]
    if args.server_url.rstrip("/") not in servers:
        sys.exit("--server-url %s is not in the spec's servers %s" % (args.server_url, servers))
    app = OpenAPI.from_file_path(args.spec)  # also validates the spec itself

    logf = open(args.log, "a", encoding="utf-8")
    trace = open(args.trace, "a", encoding="utf-8") if args.trace else None
    tally = Tally()
    cfg = dict(app=app, index=SpecIndex(spec_dict), tally=tally, log_lock=threading.Lock(),
               logf=logf, trace=trace, upstream=args.upstream, prefix=args.prefix,
               server_url=args.server_url, timeout=args.timeout, verbose=args.verbose)
    host, port = args.listen.rsplit(":", 1)
    srv = http.server.ThreadingHTTPServer((host, int(port)), make_handler(cfg))
    srv.daemon_threads = True
    print("oapi-check proxy listening on http://%s:%d%s -> %s" % (
        host, srv.server_address[1], args.prefix, args.upstream), flush=True)

    done = threading.Event()

    def stop(signum, frame):
        if not done.is_set():
            done.set()
            threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
        text = tally.render()
        print(text, flush=True)
        if args.tally_json:
            with open(args.tally_json, "w", encoding="utf-8") as f:
                json.dump(tally.as_dict(), f, ensure_ascii=False, indent=1, default=str)
        logf.close()
        if trace:
            trace.close()


if __name__ == "__main__":
    main()
