#!/usr/bin/env python3
"""Independent black-box acceptance harness for ofc-signer.

Re-implements, from /work/shared/spec/express-compat.md only (no ofc-signer code), a fake BitGo
API that checks the upstream HMAC authentication of every request (spec section 4) and signs its
responses, then drives the ofc-signer binary over HTTP and compares its answers with the BitGo SDK
vectors (tests/vectors/sdk-vectors.json) and the error contract of the spec. Signer mode (1.5-1.7,
11.9), signer authentication, forward mode (1.3) and the `verify`/`sign` subcommands are checked
against the spec and the project README. The generic proxy (5.1-5.3, 11.12), Go Network
sign-and-forward of partner settlements (5.5, 11.10; the fake checks signatures with its own
pure-Python secp256k1 recovery) and the audit log (`ofc-signer audit verify`) are checked too.

Usage: python3 tests/external/acceptance.py [--binary target/debug/ofc-signer] [--quick]
Python 3.11, standard library only.  Exit status 1 if any check failed.
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "vectors" / "sdk-vectors.json"

HMAC_TOKEN = "v2x" + hashlib.sha256(b"acceptance-harness-token").hexdigest()  # 67 chars
LEGACY_TOKEN = "v123xyz" + "0a1b2c3d4e5f" * 3  # 43 chars, legacy (len != 67, no v2x prefix)
CANNED_SIGNATURE = "1f" + "ab" * 64  # 130 hex chars, returned by the fake's tx/sign

MAX_BODY = 20 * 1024 * 1024  # 20 971 520 bytes (body-parser "20mb")

MSG_USER_KEY_REQUIRED = (
    "Wallet must use user key to sign ofc transaction, please provide the wallet passphrase, "
    "the private key, or visit your wallet settings page to configure one."
)
MSG_NO_BITGO_SIGNING = (
    "Wallet does not support BitGo signing. Please reach out to support@bitgo.com to resolve this issue."
)
MSG_NO_ENCRYPTED_PRV = "Expected encryptedPrv to be present on user keychain."
MSG_WRONG_PASSPHRASE = "unable to decrypt keychain with the given wallet passphrase"
MSG_SIGNER_MODE_ALONE = (
    "signerMode and signerFileSystemPath must both be set in order to run in external signing mode."
)
MSG_CUSTOM_NO_URI = (
    "must use --customrooturi or set the BITGO_CUSTOM_ROOT_URI environment variable when using "
    "the custom environment"
)
SECRET_KEYS = {"password", "passphrase", "walletpassphrase", "prv", "privatekey", "encryptedprv", "secret"}


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

def now_ms():
    return int(time.time() * 1000)


def hmac_hex(token, subject_bytes):
    return hmac.new(token.encode("utf-8"), subject_bytes, hashlib.sha256).hexdigest()


def sha256_hex(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def jdump(obj, ascii_only=False):
    """Compact JSON like JavaScript's JSON.stringify (for the simple values used here)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii_only)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def js_utf8(text):
    """Buffer.from(str, 'utf8'): lone surrogates become U+FFFD (EF BF BD)."""
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text).encode("utf-8")


def redact(text, secrets):
    """Spec 0.3: each non-empty secret value occurring in an error string becomes [REDACTED]."""
    for s in secrets:
        if s:
            text = text.replace(s, "[REDACTED]")
    return text


def body_secrets(body_obj):
    out = []

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k.lower() in SECRET_KEYS and isinstance(x, str) and x:
                    out.append(x)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(body_obj)
    return out


class _Any:
    """Placeholder in an expected body: any value of the given type."""

    def __init__(self, typ):
        self.typ = typ

    def __repr__(self):
        return f"<any {self.typ.__name__}>"


ANY_STR = _Any(str)
VERSIONS = [("bitgoJsVersion", ANY_STR), ("bitgoExpressVersion", ANY_STR)]


class Resp:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        self.pairs = None
        self.json_error = None
        try:
            self.pairs = json.loads(raw.decode("utf-8"), object_pairs_hook=Pairs)
        except Exception as e:  # noqa: BLE001 - any decode problem is reported by the checks
            self.json_error = f"{type(e).__name__}: {e}"

    @property
    def obj(self):
        return _to_plain(self.pairs)

    @property
    def ctype(self):
        return self.headers.get("content-type", "")

    def short(self, limit=400):
        text = self.raw.decode("utf-8", "replace")
        if len(text) > limit:
            text = text[:limit] + f"...(+{len(text) - limit} chars)"
        return f"{self.status} {text}"


class Pairs(list):
    """A JSON object decoded as its ordered (key, value) pairs (keeps order and duplicates)."""


def _to_plain(p):
    if isinstance(p, Pairs):
        return {k: _to_plain(v) for k, v in p}
    if isinstance(p, list):
        return [_to_plain(x) for x in p]
    return p


def _is_obj_pairs(p):
    return isinstance(p, Pairs)


def http_request(port, method, path, body=None, headers=None, timeout=60, raise_errors=False):
    """One request on a fresh connection; returns Resp (status 0 on a transport error).
    Tolerates the server answering and closing before the whole body was sent (413)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        try:
            conn.request(method, path, body=body, headers=headers or {})
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = conn.getresponse()
        raw = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, raw)
    except (OSError, http.client.HTTPException) as e:
        if raise_errors:
            raise
        return Resp(0, {}, f"<transport error: {type(e).__name__}: {e}>".encode())
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Check bookkeeping
# --------------------------------------------------------------------------------------------

class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, group, name, ok, reason=""):
        if ok:
            self.passed += 1
            print(f"PASS  [{group}] {name}", flush=True)
        else:
            self.failed += 1
            self.failures.append(f"[{group}] {name}: {reason}")
            print(f"FAIL  [{group}] {name} -- {reason}", flush=True)
        return ok


def diff_body(resp, status, expected_pairs):
    """Compare status, JSON content type, exact key order and values. Returns '' if all match."""
    problems = []
    if resp.status != status:
        problems.append(f"status {resp.status} != {status}")
    if not resp.ctype.lower().startswith("application/json"):
        problems.append(f"content-type {resp.ctype!r}")
    if resp.pairs is None or not _is_obj_pairs(resp.pairs):
        problems.append(f"body is not a JSON object ({resp.json_error or 'other JSON type'})")
        return "; ".join(problems) + f"; got {resp.short()}"
    got_keys = [k for k, _ in resp.pairs]
    want_keys = [k for k, _ in expected_pairs]
    if got_keys != want_keys:
        problems.append(f"keys {got_keys} != {want_keys}")
    got = dict(resp.pairs)
    for k, want in expected_pairs:
        if k not in got:
            continue
        val = _to_plain(got[k])
        if isinstance(want, _Any):
            if not isinstance(val, want.typ) or val == "":
                problems.append(f"{k}={val!r} is not a non-empty {want.typ.__name__}")
        elif val != want:
            problems.append(f"{k}={val!r} != {want!r}")
    if problems:
        return "; ".join(problems) + f"; got {resp.short()}"
    return ""


def error_pairs(message, name, code=None, error=True):
    """Spec 0.3 error body: [error,] message, name, bitgoJsVersion, bitgoExpressVersion[, code]."""
    pairs = [("error", message)] if error else []
    pairs += [("message", message), ("name", name)] + VERSIONS
    if code is not None:
        pairs.append(("code", code))
    return pairs


# --------------------------------------------------------------------------------------------
# Fake BitGo API
# --------------------------------------------------------------------------------------------

class Record:
    def __init__(self, method, path, headers, body, verdict, token_kind):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.verdict = verdict  # "" = authentication OK, else the reason it failed
        self.token_kind = token_kind  # "hmac", "legacy" or None
        self.waived = False  # set by checks that deliberately send bad/no auth

    def __repr__(self):
        return f"{self.method} {self.path}" + (f" [auth: {self.verdict}]" if self.verdict else "")


class FakeBitGo:
    """A fake BitGo REST API that authenticates every request per spec section 4."""

    def __init__(self, name):
        self.name = name
        self.wallets = {}  # walletId -> wallet document (dict, insertion ordered)
        self.keys = {}  # keyId -> keychain document
        self.hmac_tokens = {HMAC_TOKEN: None}
        self.token_by_hash = {sha256_hex(t): t for t in self.hmac_tokens}
        self.legacy_tokens = {LEGACY_TOKEN}
        self.records = []
        self.lock = threading.Lock()
        self.faults = []  # [{status, ctype, body, path_contains, count}]
        self.delay_s = 0.0
        self.delay_count = 0
        self.hmac_mode = "ok"  # "ok", "corrupt" or "missing"
        self.net = None  # a FakeNetwork serving the Go Network endpoints, if set
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHandler)
        self.server.daemon_threads = True
        self.server.fake = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"fake-{name}", daemon=True)
        self.thread.start()

    @property
    def root_uri(self):
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # ---- setup ---------------------------------------------------------------------------
    def add_wallet(self, wallet_id, key_ids, coin_specific=None, top_level=None, label="Trading Account ✓"):
        doc = {
            "id": wallet_id,
            "coin": "ofc",
            "label": label,
            "enterprise": "5f1e2d3c4b5a69788796a5b4",
            "keys": list(key_ids),
            "m": 1,
            "n": 1,
            "type": "custodial",
            "coinSpecific": dict(coin_specific or {}),
        }
        if top_level:
            doc.update(top_level)
        self.wallets[wallet_id] = doc

    def add_key(self, key_id, encrypted_prv, pub="xpub-placeholder"):
        doc = {"id": key_id, "pub": pub}
        if encrypted_prv is not None:
            doc["encryptedPrv"] = encrypted_prv
        doc.update({"source": "user", "type": "independent"})
        self.keys[key_id] = doc

    # ---- control -------------------------------------------------------------------------
    def mark(self):
        with self.lock:
            return len(self.records)

    def since(self, idx):
        with self.lock:
            return list(self.records[idx:])

    def waive_since(self, idx):
        for r in self.since(idx):
            r.waived = True

    def inject(self, status, body, ctype="application/json", path_contains=None, count=1, headers=None, path_is=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
        with self.lock:
            self.faults.append(dict(status=status, ctype=ctype, body=body, path_contains=path_contains, count=count,
                                    headers=dict(headers or {}), path_is=path_is))

    def clear_faults(self):
        with self.lock:
            self.faults.clear()
            self.delay_count = 0
            self.hmac_mode = "ok"

    def delay_next(self, seconds, count=1):
        with self.lock:
            self.delay_s, self.delay_count = seconds, count

    # ---- request processing ---------------------------------------------------------------
    def authenticate(self, method, path, headers, body):
        """Returns (verdict, token, kind); verdict '' means the request is correctly authenticated."""
        auth = headers.get("Authorization")
        version = headers.get("BitGo-Auth-Version")
        ts = headers.get("Auth-Timestamp")
        mac = headers.get("HMAC")
        if auth is None:
            return "no Authorization header", None, None
        if not auth.startswith("Bearer "):
            return f"Authorization not 'Bearer <x>': {auth!r}", None, None
        cred = auth[len("Bearer "):]
        if cred in self.legacy_tokens:
            extra = [h for h, v in (("BitGo-Auth-Version", version), ("Auth-Timestamp", ts), ("HMAC", mac)) if v]
            if extra:
                return f"legacy token sent with HMAC headers {extra}", cred, "legacy"
            return "", cred, "legacy"
        token = self.token_by_hash.get(cred)
        if token is None:
            return "bearer is neither sha256(known token) nor a legacy token (raw token leaked?)", None, None
        if version != "2.0":
            return f"BitGo-Auth-Version {version!r} != '2.0'", token, "hmac"
        if ts is None or not ts.isdigit():
            return f"Auth-Timestamp {ts!r} is not decimal milliseconds", token, "hmac"
        if abs(now_ms() - int(ts)) > 5 * 60 * 1000:
            return f"Auth-Timestamp {ts} not within 5 minutes of now", token, "hmac"
        subject = ts.encode() + b"|" + path.encode("latin-1") + b"|" + body
        want = hmac_hex(token, subject)
        if mac is None or not hmac.compare_digest(mac, want):
            return f"HMAC {mac!r} != HMAC-SHA256(token, {subject[:120]!r})", token, "hmac"
        return "", token, "hmac"

    def take_fault(self, path):
        with self.lock:
            for f in self.faults:
                if f.get("path_is") is not None and f["path_is"] != path:
                    continue
                if f["path_contains"] is None or f["path_contains"] in path:
                    f["count"] -= 1
                    if f["count"] <= 0:
                        self.faults.remove(f)
                    return f
            return None

    def take_delay(self):
        with self.lock:
            if self.delay_count > 0:
                self.delay_count -= 1
                return self.delay_s
            return 0.0

    def route(self, method, path, headers=None, body=b""):
        """Returns (status, content_type, body_bytes) for an authenticated request."""
        if self.net is not None:
            answer = self.net.route(method, path, headers or {}, body)
            if answer is not None:
                return answer
        route_path = path.split("?", 1)[0]
        segs = route_path.split("/")
        # ['', 'api', 'v2', 'ofc', 'wallet', '<id>'(, 'tx', 'sign')]
        if method == "GET" and route_path == "/api/v1/ping":
            return 200, "application/json", jdump({"status": "service is ok!"}).encode()
        if len(segs) == 6 and segs[1:5] == ["api", "v2", "ofc", "wallet"] and method == "GET":
            w = self.wallets.get(urllib.parse.unquote(segs[5]))
            if w is None:
                return 404, "application/json", b'{"error":"wallet not found","name":"WalletNotFound","requestId":"r-1"}'
            # Deliberately non-compact JSON with raw UTF-8: the response HMAC is over these bytes.
            return 200, "application/json; charset=utf-8", json.dumps(w, ensure_ascii=False).encode("utf-8")
        if len(segs) == 6 and segs[1:5] == ["api", "v2", "ofc", "key"] and method == "GET":
            k = self.keys.get(urllib.parse.unquote(segs[5]))
            if k is None:
                return 404, "application/json", b'{"error":"key not found","name":"KeyNotFound","requestId":"r-2"}'
            return 200, "application/json", json.dumps(k, ensure_ascii=False).encode("utf-8")
        if len(segs) == 8 and segs[1:5] == ["api", "v2", "ofc", "wallet"] and segs[6:] == ["tx", "sign"] and method == "POST":
            if urllib.parse.unquote(segs[5]) not in self.wallets:
                return 404, "application/json", b'{"error":"wallet not found","name":"WalletNotFound","requestId":"r-1"}'
            return 200, "application/json", jdump({"signature": CANNED_SIGNATURE}).encode()
        return 404, "application/json", jdump({"error": f"no fake route for {method} {route_path}"}).encode()


class _FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive capable (the signer may reuse connections)

    def log_message(self, *args):  # quiet
        pass

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self):
        fake = self.server.fake
        body = self._read_body()
        verdict, token, kind = fake.authenticate(self.command, self.path, self.headers, body)
        rec = Record(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, verdict, kind)
        with fake.lock:
            fake.records.append(rec)
        delay = fake.take_delay()
        if delay:
            time.sleep(delay)
        fault = fake.take_fault(self.path)
        extra_headers = {}
        if fault is not None:
            status, ctype, out = fault["status"], fault["ctype"], fault["body"]
            extra_headers = fault.get("headers") or {}
        elif verdict:
            status, ctype, out = 401, "application/json", b'{"error":"Authentication failed"}'
        else:
            status, ctype, out = fake.route(self.command, self.path, rec.headers, body)
        if self.command == "HEAD":
            out = b""  # no body on a HEAD answer (and the response HMAC is over the empty text)
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, val in extra_headers.items():
            self.send_header(k, val)
        self.send_header("Content-Length", str(len(out)))
        if kind == "hmac" and token is not None and fake.hmac_mode != "missing":
            ts = str(now_ms())
            mac = hmac_hex(token, ts.encode() + b"|" + self.path.encode("latin-1") + b"|" + str(status).encode() + b"|" + out)
            if fake.hmac_mode == "corrupt":
                mac = ("0" if mac[0] != "0" else "1") + mac[1:]
            self.send_header("timestamp", ts)
            self.send_header("hmac", mac)
        self.end_headers()
        if out:
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


# --------------------------------------------------------------------------------------------
# secp256k1 in pure Python (spec section 2): the fake's Go Network checks the signatures itself
# --------------------------------------------------------------------------------------------

SECP_P = 2**256 - 2**32 - 977
SECP_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP_G = (0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
          0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8)


def _ec_add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    (x1, y1), (x2, y2) = a, b
    if x1 == x2:
        if (y1 + y2) % SECP_P == 0:
            return None
        lam = 3 * x1 * x1 * pow(2 * y1, -1, SECP_P) % SECP_P
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, SECP_P) % SECP_P
    x3 = (lam * lam - x1 - x2) % SECP_P
    return x3, (lam * (x1 - x3) - y1) % SECP_P


def _ec_mul(k, point):
    out = None
    while k:
        if k & 1:
            out = _ec_add(out, point)
        point = _ec_add(point, point)
        k >>= 1
    return out


def ec_pub_hex(point):
    """Compressed SEC1 encoding (33 bytes, hex)."""
    return ("02" if point[1] % 2 == 0 else "03") + format(point[0], "064x")


def btc_message_digest(message):
    """SHA256(SHA256(0x18 'Bitcoin Signed Message:\\n' || CompactSize(len) || message))."""
    n = len(message)
    if n < 0xFD:
        size = bytes([n])
    elif n <= 0xFFFF:
        size = b"\xfd" + n.to_bytes(2, "little")
    else:
        size = b"\xfe" + n.to_bytes(4, "little")
    data = b"\x18Bitcoin Signed Message:\n" + size + message
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def btc_split_sig(sig_hex):
    """(header, r, s) of a 65-byte compact signature in hex, or None."""
    try:
        sig = bytes.fromhex(sig_hex)
    except (TypeError, ValueError):
        return None
    if len(sig) != 65 or sig_hex != sig_hex.lower():
        return None
    return sig[0], int.from_bytes(sig[1:33], "big"), int.from_bytes(sig[33:], "big")


def btc_recover(message, sig_hex):
    """The compressed public key (hex) that made compact signature sig_hex over message (bytes),
    or None. Only compressed-key headers 31..34 (27 + 4 + recid) are accepted, as spec 2 says."""
    parts = btc_split_sig(sig_hex)
    if parts is None:
        return None
    header, r, s = parts
    if not 31 <= header <= 34 or not (0 < r < SECP_N and 0 < s < SECP_N):
        return None
    recid = header - 31
    x = r + (recid >> 1) * SECP_N
    if x >= SECP_P:
        return None
    alpha = (x * x * x + 7) % SECP_P
    y = pow(alpha, (SECP_P + 1) // 4, SECP_P)
    if y * y % SECP_P != alpha:
        return None
    if y % 2 != recid & 1:
        y = SECP_P - y
    e = int.from_bytes(btc_message_digest(message), "big")
    r_inv = pow(r, -1, SECP_N)
    q = _ec_add(_ec_mul(s * r_inv % SECP_N, (x, y)), _ec_mul(-e * r_inv % SECP_N, SECP_G))
    return None if q is None else ec_pub_hex(q)


def btc_sign(message, priv_hex):
    """A compact signature (random nonce, low-S) by the harness itself, for pre-signed bodies."""
    d = int(priv_hex, 16)
    e = int.from_bytes(btc_message_digest(message), "big")
    while True:
        k = secrets.randbelow(SECP_N - 1) + 1
        point = _ec_mul(k, SECP_G)
        r = point[0] % SECP_N
        s = pow(k, -1, SECP_N) * (e + r * d) % SECP_N
        if r == 0 or s == 0:
            continue
        recid = (point[1] & 1) | (2 if point[0] >= SECP_N else 0)
        if s > SECP_N // 2:
            s, recid = SECP_N - s, recid ^ 1
        return format(31 + recid, "02x") + format(r, "064x") + format(s, "064x")


# --------------------------------------------------------------------------------------------
# Fake Go Network endpoints (partner settlements), served by a FakeBitGo whose .net is set
# --------------------------------------------------------------------------------------------

SETTLEMENT_MARKER = "acceptance-fake/settlement-payload/1"
_NET_PATH = re.compile(r"/api/network/(v[12])/enterprises/([^/]+)/partners/(settlements-signing|settlements)/?")


class FakeNetwork:
    """BitGo's partner-settlement endpoints as the guide describes them (examples/bitgo-docs-curl.md):
    `…/partners/settlements-signing` answers {"payload": P} with the fake's OWN canonical string P
    (fixed key order, a marker member, ", "/": " separators, ASCII escapes: never the request
    body); `POST /api/network/v1|v2/enterprises/:eid/partners/settlements` checks the enterprise-id
    header, that payload is exactly P for the posted fields, that the signature recovers to the
    enterprise's trading-account key, refuses other content under a known externalId (409),
    answers an identical replay 200 with the existing settlement and creates with 201."""

    def __init__(self, enterprise_keys):
        self.enterprise_keys = dict(enterprise_keys)  # enterpriseId -> compressed public key hex
        self.settlements = {}  # (enterpriseId, externalId) -> (posted object, settlement document)
        self.creates = 0
        self.issued = []  # payloads handed out by settlements-signing
        self.submissions = []  # (version, enterpriseId, status, reason) of every settlements POST
        self.audit_path = None  # if set: whether each posted signature was already in this file
        self.audited_first = {}  # signature -> it was in audit_path when the POST arrived
        self.lock = threading.Lock()

    @staticmethod
    def canonical(enterprise_id, fields):
        def ordered(v):
            return {k: ordered(v[k]) for k in sorted(v)} if isinstance(v, dict) else v

        doc = {"marker": SETTLEMENT_MARKER, "enterpriseId": enterprise_id}
        for k in ("externalId", "nonce", "cutoffAt", "notes"):
            if k in fields:
                doc[k] = fields[k]
        doc["settlementAmounts"] = ordered(fields.get("settlementAmounts"))
        return json.dumps(doc, separators=(", ", ": "), ensure_ascii=True)

    @staticmethod
    def _answer(status, obj):
        return status, "application/json", jdump(obj).encode("utf-8")

    def _error(self, status, message, version=None, eid=None):
        if version is not None:
            with self.lock:
                self.submissions.append((version, eid, status, message))
        return self._answer(status, {"error": message, "name": "FakeNetworkError"})

    def route(self, method, path, headers, body):
        m = _NET_PATH.fullmatch(path.split("?", 1)[0])
        if m is None:
            return None
        version, eid, kind = int(m.group(1)[1]), urllib.parse.unquote(m.group(2)), m.group(3)
        sub = version if kind == "settlements" else None
        if method not in (("GET", "POST") if kind == "settlements-signing" else ("POST",)):
            return self._error(405, f"{method} not allowed on {kind}", sub, eid)
        if headers.get("enterprise-id") != eid:
            return self._error(400, f"enterprise-id header {headers.get('enterprise-id')!r} != {eid!r}", sub, eid)
        try:
            obj = json.loads(body.decode("utf-8")) if body else {}
        except (UnicodeDecodeError, ValueError):
            return self._error(400, "body is not JSON", sub, eid)
        if not isinstance(obj, dict):
            return self._error(400, "body is not a JSON object", sub, eid)
        wanted = ["externalId", "nonce"] + (["payload", "signature"] if kind == "settlements" else [])
        bad = [k for k in wanted if not isinstance(obj.get(k), str) or not obj[k]]
        if not isinstance(obj.get("settlementAmounts"), dict):
            bad.append("settlementAmounts")
        if bad:
            return self._error(400, f"missing or invalid fields: {', '.join(bad)}", sub, eid)
        if kind == "settlements" and self.audit_path is not None:
            try:
                logged = self.audit_path.read_bytes()
            except OSError:
                logged = b""
            with self.lock:
                self.audited_first.setdefault(obj["signature"], obj["signature"].encode() in logged)
        if kind == "settlements-signing":
            payload = self.canonical(eid, obj)
            with self.lock:
                self.issued.append(payload)
            return self._answer(200, {"payload": payload})
        if version == 2 and not (isinstance(obj.get("cutoffAt"), str) and obj["cutoffAt"]):
            return self._error(400, "cutoffAt is required for v2 settlements", sub, eid)
        if obj["payload"] != self.canonical(eid, obj):
            return self._error(400, "payload is not the canonical payload of this settlement", sub, eid)
        pub = self.enterprise_keys.get(eid)
        if pub is None:
            return self._error(404, f"unknown enterprise {eid}", sub, eid)
        if btc_recover(obj["payload"].encode("utf-8"), obj["signature"]) != pub:
            return self._error(400, "invalid signature", sub, eid)
        with self.lock:
            existing = self.settlements.get((eid, obj["externalId"]))
            if existing is not None:
                if existing[0] != obj:
                    self.submissions.append((version, eid, 409, "conflict"))
                    return self._answer(409, {"error": f"settlement {obj['externalId']} exists with other content",
                                              "name": "DuplicateExternalId"})
                self.submissions.append((version, eid, 200, "replay"))
                return self._answer(200, {"settlement": existing[1]})
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
            doc = {"id": str(uuid.uuid4()), "partnerId": f"partner-of-{eid}", "externalId": obj["externalId"],
                   "cutoffAt": obj.get("cutoffAt", "2023-01-26T00:31:26+0000"), "reason": None, "status": "completed",
                   "reconciled": False, "notes": obj.get("notes"), "createdAt": stamp, "updatedAt": stamp}
            self.settlements[(eid, obj["externalId"])] = (obj, doc)
            self.creates += 1
            self.submissions.append((version, eid, 201, "created"))
        return self._answer(201, {"settlement": doc})


# --------------------------------------------------------------------------------------------
# The ofc-signer process
# --------------------------------------------------------------------------------------------

def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith(("BITGO_", "WALLET_", "OFC_SIGNER_")) or k in ("NODE_ENV", "DISABLESSL", "DISABLE_SSL", "DISABLE_PROXY", "DISABLE_ENV_CHECK"))}
    env.update(extra or {})
    return env


class Signer:
    """One ofc-signer process started with the acceptance-contract command line."""

    def __init__(self, binary, root_uri, name, env_extra=None, extra_args=()):
        self.name = name
        self.port = free_port()
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--env", "custom",
                     "--customrooturi", root_uri, "--disablessl"] + [str(a) for a in extra_args]
        self.tmp = tempfile.TemporaryDirectory(prefix=f"ofc-accept-{name}-")
        self.out_path = Path(self.tmp.name) / "stdout"
        self.err_path = Path(self.tmp.name) / "stderr"
        # Run in its own empty directory: no stray .env, and the default state directory
        # (./ofc-signer-state/port-<port>) lands there, not in the repository.
        self.proc = subprocess.Popen(self.args, stdout=open(self.out_path, "wb"), stderr=open(self.err_path, "wb"),
                                     stdin=subprocess.DEVNULL, env=clean_env(env_extra), cwd=self.tmp.name)
        self.ready_error = self._wait_ready()

    def _wait_ready(self, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return f"exited with {self.proc.returncode}: {self.output()[-600:]}"
            try:
                r = http_request(self.port, "GET", "/api/v2/pingexpress", timeout=2, raise_errors=True)
                if r.status == 200:
                    return ""
            except OSError:
                pass
            time.sleep(0.05)
        return f"GET /api/v2/pingexpress did not answer 200 within {timeout} s"

    def output(self):
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    def stdout(self):
        return self.out_path.read_text(errors="replace")

    def request(self, method, path, body=None, token=HMAC_TOKEN, ctype="application/json", headers=None):
        h = {}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if body is not None and ctype is not None:
            h["Content-Type"] = ctype
        h.update(headers or {})
        if isinstance(body, str):
            body = body.encode("utf-8")
        return http_request(self.port, method, path, body=body, headers=h)

    def sign(self, body, **kw):
        return self.request("POST", "/api/v2/ofc/signPayload", body, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.tmp.cleanup()


class ModeSigner(Signer):
    """An ofc-signer process in signer or forward mode: `ofc-signer <args> --port P --bind <bind> <tail>`,
    run in its own empty directory (no stray .env). Ready when GET /api/v2/pingexpress gets any HTTP
    answer (signer mode has no ping route: 404) or, if ready_status is given, that status. Requests
    carry no Authorization header unless one is given."""

    def __init__(self, binary, name, args, env_extra=None, bind="127.0.0.1", tail=(), ready_status=None):
        self.name = name
        self.port = free_port()
        self.args = [binary] + [str(a) for a in args] + ["--port", str(self.port), "--bind", bind] + [str(a) for a in tail]
        self.tmp = tempfile.TemporaryDirectory(prefix=f"ofc-accept-{name}-")
        self.out_path = Path(self.tmp.name) / "stdout"
        self.err_path = Path(self.tmp.name) / "stderr"
        self.proc = subprocess.Popen(self.args, stdout=open(self.out_path, "wb"), stderr=open(self.err_path, "wb"),
                                     stdin=subprocess.DEVNULL, env=clean_env(env_extra), cwd=self.tmp.name)
        self.ready_error = self._wait_answer(ready_status)

    def _wait_answer(self, want, timeout=10.0):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return f"exited with {self.proc.returncode}: {self.output()[-600:]}"
            try:
                last = http_request(self.port, "GET", "/api/v2/pingexpress", timeout=2, raise_errors=True)
                if want is None or last.status == want:
                    return ""
            except OSError:
                pass
            time.sleep(0.05)
        return f"GET /api/v2/pingexpress got no {want or 'HTTP'} answer within {timeout} s" + (f" (last {last.short(200)})" if last else "")

    def stderr(self):
        return self.err_path.read_text(errors="replace")

    def request(self, method, path, body=None, token=None, ctype="application/json", headers=None):
        return super().request(method, path, body, token=token, ctype=ctype, headers=headers)


class ConnCounter:
    """A TCP listener that only counts (and closes) the connections it gets. Given to a signer-mode
    instance as its BitGo root URI, it proves that no request ever goes upstream."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.closed = False
        threading.Thread(target=self._loop, name="conn-counter", daemon=True).start()

    def _loop(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.count += 1
            c.close()

    def close(self):
        self.closed = True
        self.sock.close()


def write_atomic(path, text):
    """Write a file the way a careful operator (or fetch-keys) does: temporary file + rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def key_file_text(entries):
    """A signer key file as fetch-keys writes it: JSON.stringify(keys, null, '\\t')."""
    return json.dumps(entries, indent="\t", ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Test context: fakes, wallets, signer instances
# --------------------------------------------------------------------------------------------

# Extra wallets (served by the v1 fake) for the error table.
W_REQUIRED = "e0000000000000000000000000000001"  # 2 keys, default userKeySigningRequired -> required
W_REQUIRED_CS = "e0000000000000000000000000000002"  # coinSpecific true beats top-level false
W_REMOTE = "e0000000000000000000000000000003"  # 2 keys, coinSpecific false -> remote signing
W_REMOTE_TOP = "e0000000000000000000000000000004"  # 2 keys, top-level false -> remote signing
W_ONE_KEY = "e0000000000000000000000000000005"  # 1 key, not required -> cannot use BitGo signing
W_NO_PRV = "e0000000000000000000000000000006"  # keychain without encryptedPrv (env passphrase set)
W_WRONG_ENV = "e0000000000000000000000000000007"  # env passphrase is wrong
W_ODD_KEY = "e0000000000000000000000000000008"  # key id needing percent-encoding
ODD_KEY_ID = "key/with space?x=1&y"
BITGO_KEY_ID = "bitgo0000000000000000001"
WRONG_PASSPHRASE = "definitely wrong ✗"


class Ctx:
    def __init__(self, binary, quick):
        self.binary = binary
        self.quick = quick
        self.report = Report()
        self.vec = json.loads(VECTORS.read_text(encoding="utf-8"))
        self.sign_vectors = self.vec["sign"]
        self.meta_keys = {k["label"]: k for k in self.vec["meta"]["keys"]}
        self.by_id = {v["id"]: v for v in self.sign_vectors}
        self.fakes = []
        self.signers = []
        self.closers = []  # other things to close (connection counters)
        self.workdir = tempfile.TemporaryDirectory(prefix="ofc-accept-files-")
        self.sm_raw = {}  # vector id -> raw signer-mode response body (compared with the sign CLI)

    def check(self, group, name, ok, reason=""):
        return self.report.check(group, name, ok, reason)

    def run(self, fn, *args):
        """Run one check group; an unexpected exception is reported as a failure, not a crash."""
        try:
            return fn(self, *args)
        except Exception as e:  # noqa: BLE001
            import traceback
            self.check(fn.__name__, "group completed", False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
            return None

    def envelope(self, v, version):
        """(encryptedPrv, passphrase) used for sign vector v with a v1 or v2 envelope."""
        if version == 1:
            return v["encryptedPrv"], v["walletPassphrase"]
        k = self.meta_keys[v["keyLabel"]]
        return k["encryptedPrvV2"], k["walletPassphrase"]

    @staticmethod
    def key_id(wallet_id):
        return "k" + wallet_id[:23]

    def make_fake(self, version):
        fake = FakeBitGo(f"v{version}")
        self.fakes.append(fake)
        for v in self.sign_vectors:
            enc, _ = self.envelope(v, version)
            fake.add_key(self.key_id(v["walletId"]), enc, v["pub"])
            fake.add_wallet(v["walletId"], [self.key_id(v["walletId"])])
        if version == 1:
            root0 = self.meta_keys["root0"]
            fake.add_key("kroot0", root0["encryptedPrv"], root0["pub"])
            fake.add_key("knoprv", None, root0["pub"])
            fake.add_key(ODD_KEY_ID, root0["encryptedPrv"], root0["pub"])
            fake.add_key(BITGO_KEY_ID, None, "xpub-bitgo")
            two = ["kroot0", BITGO_KEY_ID]
            fake.add_wallet(W_REQUIRED, two)
            fake.add_wallet(W_REQUIRED_CS, two, {"userKeySigningRequired": True}, {"userKeySigningRequired": False})
            fake.add_wallet(W_REMOTE, two, {"userKeySigningRequired": False})
            fake.add_wallet(W_REMOTE_TOP, two, {}, {"userKeySigningRequired": False})
            fake.add_wallet(W_ONE_KEY, ["kroot0"], {"userKeySigningRequired": False})
            fake.add_wallet(W_NO_PRV, ["knoprv"])
            fake.add_wallet(W_WRONG_ENV, ["kroot0"])
            fake.add_wallet(W_ODD_KEY, [ODD_KEY_ID])
        return fake

    def env_passphrases(self, version):
        env = {}
        for v in self.sign_vectors:
            env[f"WALLET_{v['walletId']}_PASSPHRASE"] = self.envelope(v, version)[1]
        if version == 1:
            root0 = self.meta_keys["root0"]["walletPassphrase"]
            env[f"WALLET_{W_NO_PRV}_PASSPHRASE"] = root0
            env[f"WALLET_{W_WRONG_ENV}_PASSPHRASE"] = WRONG_PASSPHRASE
            env[f"WALLET_{W_ODD_KEY}_PASSPHRASE"] = root0
        return env

    def start(self, root_uri, name, env_extra=None, extra_args=()):
        s = Signer(self.binary, root_uri, name, env_extra, extra_args)
        self.signers.append(s)
        ok = self.check("startup", f"instance {name} answers /api/v2/pingexpress", not s.ready_error, s.ready_error)
        return s if ok else None

    def start_mode(self, name, args, env_extra=None, bind="127.0.0.1", tail=(), ready_status=None, group="startup"):
        """Start a signer-mode / forward-mode instance (ModeSigner); None if it did not come up."""
        s = ModeSigner(self.binary, name, args, env_extra, bind, tail, ready_status)
        self.signers.append(s)
        ok = self.check(group, f"instance {name} is listening", not s.ready_error, s.ready_error)
        return s if ok else None

    def close(self):
        for s in self.signers:
            s.stop()
        for f in self.fakes:
            f.close()
        for c in self.closers:
            c.close()
        self.workdir.cleanup()


def insert_passphrase(raw_body, passphrase):
    assert raw_body.startswith("{")
    return "{" + '"walletPassphrase":' + json.dumps(passphrase, ensure_ascii=False) + "," + raw_body[1:]


def upstream_seq(records):
    return [(r.method, r.path) for r in records]


def auth_problems(records):
    return [f"{r!r}" for r in records if r.verdict]


# --------------------------------------------------------------------------------------------
# Check groups
# --------------------------------------------------------------------------------------------

def group_selftest(ctx):
    """The harness's own HMAC code against the SDK's v2 HMAC vectors and spec 9.1."""
    g = "selftest"
    bad = []
    for v in ctx.vec["hmac_request"]:
        if v["authVersion"] != 2:
            continue
        if (not v["subject"].startswith(f"{v['timestamp']}|") or hmac_hex(v["token"], v["subject"].encode()) != v["hmac"]
                or sha256_hex(v["token"]) != v["tokenHash"] or v["headers"].get("Authorization") != f"Bearer {v['tokenHash']}"):
            bad.append(v["id"])
    for v in ctx.vec["hmac_response"]:
        if v["authVersion"] != 2:
            continue
        u = urllib.parse.urlsplit(v["url"])
        path = u.path + ("?" + u.query if u.query else "")
        subject = f"{v['timestamp'] or ''}|{path}|{v['statusCode']}|{v['text'] or ''}"
        if hmac_hex(v["token"], v["expectedSubject"].encode()) != v["expectedHmac"] or (
                path.isascii() and " " not in path and subject != v["expectedSubject"]):
            bad.append(v["id"])
    kat = hmac_hex("test-token", b"1672531200000|/api/test|request-body")
    if kat != "16205c7959e6feb680f07642e4cfa61547e3a6656114c712ad1940fc294b9fcc":
        bad.append("spec 9.1 v2 request")
    ctx.check(g, "harness HMAC v2 subjects/digests match SDK vectors", not bad, f"mismatch: {bad}")


def group_startup_rules(ctx, signer_a):
    g = "startup"
    for name, args, msg in [
        ("--signerMode alone", ["--signerMode"], MSG_SIGNER_MODE_ALONE),
        ("--env custom without root URI", ["--port", str(free_port()), "--bind", "127.0.0.1", "--env", "custom"], MSG_CUSTOM_NO_URI),
    ]:
        try:
            p = subprocess.run([ctx.binary] + args, capture_output=True, timeout=10, env=clean_env(), stdin=subprocess.DEVNULL)
            out = (p.stdout + p.stderr).decode("utf-8", "replace")
            problems = []
            if p.returncode == 0:
                problems.append("exit status 0")
            if f"Fatal error: {msg}" not in out:
                problems.append(f"output lacks 'Fatal error: {msg}'")
            ctx.check(g, f"{name}: exits non-zero with Fatal error", not problems,
                      "; ".join(problems) + f"; rc={p.returncode} output={out[-400:]!r}")
        except subprocess.TimeoutExpired:
            ctx.check(g, f"{name}: exits non-zero with Fatal error", False, "still running after 10 s (it listens?)")
    if signer_a is None:
        return
    out = signer_a.stdout()
    for line in ["BitGo-Express running", "Environment: custom", f"Base URI: http://127.0.0.1:{signer_a.port}"]:
        ctx.check(g, f"banner contains {line!r}", line in out, f"stdout: {out[-500:]!r}")


def group_local_routes(ctx, s, fake):
    g = "local-routes"
    for path in ["/api/v1/pingexpress", "/api/v2/pingexpress"]:
        idx = fake.mark()
        r = s.request("GET", path, token=None)
        d = diff_body(r, 200, [("status", "express server is ok!")])
        if not d and fake.since(idx):
            d = f"unexpected upstream calls {upstream_seq(fake.since(idx))}"
        ctx.check(g, f"GET {path}", not d, d)
    for path in ["/api/v2/ping", "/api/v1/ping"]:
        idx = fake.mark()
        r = s.request("GET", path)
        d = diff_body(r, 200, [("status", "service is ok!")])
        recs = fake.since(idx)
        if not d and upstream_seq(recs) != [("GET", "/api/v1/ping")]:
            d = f"upstream calls {upstream_seq(recs)} != [GET /api/v1/ping]"
        if not d and auth_problems(recs):
            d = f"upstream auth: {auth_problems(recs)}"
        ctx.check(g, f"GET {path} relays the upstream ping (HMAC-signed)", not d, d)

    # encrypt / decrypt round trips
    plain = "xprv-like secret ✓ \"quoted\""
    password = "encrypt pw ✓"  # not a substring of any expected message (spec 0.3 redaction)
    for ver, body in [(2, {"input": plain, "password": password}),
                      (1, {"input": plain, "password": password, "encryptionVersion": 1})]:
        r = s.request("POST", "/api/v2/encrypt", jdump(body))
        name = f"POST /api/v2/encrypt -> v{ver} envelope"
        d = diff_body(r, 200, [("encrypted", ANY_STR)])
        env_text = r.obj.get("encrypted") if not d else None
        if not d:
            try:
                envp = json.loads(env_text, object_pairs_hook=Pairs)
                env = dict(envp)
                keys = [k for k, _ in envp]
                if ver == 2:
                    want = ["v", "m", "t", "p", "salt", "iv", "ct"]
                    fixed = {"v": 2, "m": 65536, "t": 3, "p": 4}
                    sizes = {"salt": 16, "iv": 12, "ct": len(plain.encode()) + 16}
                else:
                    want = ["iv", "v", "iter", "ks", "ts", "mode", "adata", "cipher", "salt", "ct"]
                    fixed = {"v": 1, "iter": 10000, "ks": 256, "ts": 64, "mode": "ccm", "adata": "", "cipher": "aes"}
                    sizes = {"salt": 8, "iv": 16, "ct": len(plain.encode()) + 8}
                if keys != want:
                    d = f"envelope keys {keys} != {want}"
                for k, val in fixed.items():
                    if env.get(k) != val or type(env.get(k)) is not type(val):
                        d += f" {k}={env.get(k)!r} != {val!r};"
                for k, n in sizes.items():
                    if len(base64.b64decode(env[k], validate=True)) != n:
                        d += f" {k} is not {n} bytes;"
            except Exception as e:  # noqa: BLE001
                d = f"envelope {env_text!r} unparsable: {e}"
        ctx.check(g, name, not d, d)
        if env_text:
            r2 = s.request("POST", "/api/v2/decrypt", jdump({"input": env_text, "password": password}))
            d2 = diff_body(r2, 200, [("decrypted", plain)])
            ctx.check(g, f"POST /api/v2/decrypt of the v{ver} envelope round-trips", not d2, d2)

    # encrypt validation (spec section 6)
    for body, status, msg, nm in [
        ({"password": "Q#9"}, 400, "Missing required field 'input'.", "ValidationError"),
        ({"input": 5, "password": "Q#9"}, 400, "Invalid value for 'input': expected string, got '5'.", "ValidationError"),
        ({"input": "abc"}, 500, "Missing parameter: password", "Error"),
    ]:
        r = s.request("POST", "/api/v2/encrypt", jdump(body))
        d = diff_body(r, status, error_pairs(msg, nm))
        ctx.check(g, f"POST /api/v2/encrypt {jdump(body)} -> {status}", not d, d)


def group_decrypt_vectors(ctx, s):
    g = "decrypt"
    for v in ctx.vec["decrypt"]:
        body = {"input": v["encryptedPrv"], "password": v["passphrase"]}
        r = s.request("POST", "/api/v2/decrypt", jdump(body))
        d = diff_body(r, 200, [("decrypted", v["prv"])])
        ctx.check(g, f"decrypt {v['id']} ({v['format']})", not d, d)
    for kind in ["decrypt_wrong_password", "decrypt_invalid"]:
        for v in ctx.vec[kind]:
            body = {"input": v["encryptedPrv"], "password": v["passphrase"]}
            # Spec 0.3: the request's non-empty password is redacted out of the error strings.
            msg = redact(v["sdkError"], body_secrets(body))
            r = s.request("POST", "/api/v2/decrypt", jdump(body))
            d = diff_body(r, 500, error_pairs(msg, "Error"))
            ctx.check(g, f"{kind} {v['id']} -> 500 {msg!r}", not d, d)


def sign_body_problems(r, v):
    """Problems of r as the 200 {payload, signature} answer for sign vector v (exact keys and values)."""
    problems = []
    if r.status != 200:
        problems.append(f"status {r.status}")
    elif r.pairs is None or not _is_obj_pairs(r.pairs):
        problems.append(f"body not a JSON object ({r.json_error})")
    else:
        keys = [k for k, _ in r.pairs]
        if keys != ["payload", "signature"]:
            problems.append(f"keys {keys} != ['payload', 'signature']")
        got = r.obj
        payload = got.get("payload")
        if v["payloadString"] is None:
            if not isinstance(payload, str) or js_utf8(payload).hex() != v["payloadUtf8Hex"]:
                problems.append(f"payload bytes {js_utf8(payload).hex() if isinstance(payload, str) else payload!r} != {v['payloadUtf8Hex']}")
        elif payload != v["payloadString"]:
            problems.append(f"payload {str(payload)[:120]!r} != {v['payloadString'][:120]!r}")
        if got.get("signature") != v["signature"]:
            problems.append(f"signature {got.get('signature')!r} != {v['signature']}")
    return problems


def check_sign_vector(ctx, g, s, fake, v, body_text, token=HMAC_TOKEN, expect_kind="hmac"):
    idx = fake.mark()
    r = s.sign(body_text, token=token)
    recs = fake.since(idx)
    problems = sign_body_problems(r, v)
    key_id = ctx.key_id(v["walletId"])
    want_seq = [("GET", f"/api/v2/ofc/wallet/{v['walletId']}"), ("GET", f"/api/v2/ofc/key/{key_id}")]
    if upstream_seq(recs) != want_seq:
        problems.append(f"upstream {upstream_seq(recs)} != {want_seq}")
    if auth_problems(recs):
        problems.append(f"upstream auth: {auth_problems(recs)}")
    if any(rec.token_kind != expect_kind for rec in recs):
        problems.append(f"upstream auth kind {[rec.token_kind for rec in recs]} != {expect_kind}")
    if problems and r.status != 200:
        problems.append(f"got {r.short(300)}")
    return problems


def group_sign_vectors(ctx, label, s, fake, version, passphrase_in_body, vectors):
    g = f"sign-{label}"
    for v in vectors:
        body = v["rawBody"]
        if passphrase_in_body:
            body = insert_passphrase(body, ctx.envelope(v, version)[1])
        problems = check_sign_vector(ctx, g, s, fake, v, body)
        ctx.check(g, v["id"], not problems, "; ".join(problems))


def group_validation(ctx, s, fake):
    """Spec 1.1 table: typed-route schema violations, 400 ValidationError, no upstream call."""
    g = "validation"
    w = '"walletId":"w"'
    rows = [
        ("{}", "Missing required field 'walletId'. Missing required field 'payload'."),
        ('{"walletId":"w"}', "Missing required field 'payload'."),
        ('{"walletId":"","payload":{}}', "Invalid value for 'walletId': expected NonEmptyString, got ''."),
        ('{"walletId":123,"payload":{}}', "Invalid value for 'walletId': expected NonEmptyString, got '123'."),
        ('{"walletId":null,"payload":{}}', "Invalid value for 'walletId': expected NonEmptyString, got 'null'."),
        ('{"walletId":["a"],"payload":{}}', "Invalid value for 'walletId': expected NonEmptyString, got '[\"a\"]'."),
        ('{' + w + ',"payload":{},"walletPassphrase":123}', "Invalid value for 'walletPassphrase': expected string, got '123'."),
        ('{' + w + ',"payload":{},"walletPassphrase":null}', "Invalid value for 'walletPassphrase': expected string, got 'null'."),
        ('{' + w + ',"payload":{},"walletPassphrase":true}', "Invalid value for 'walletPassphrase': expected string, got 'true'."),
        ("[]", ""),
    ]
    for body, msg in rows:
        idx = fake.mark()
        r = s.sign(body)
        d = diff_body(r, 400, error_pairs(msg, "ValidationError"))
        if not d and fake.since(idx):
            d = f"validation failure made upstream calls {upstream_seq(fake.since(idx))}"
        ctx.check(g, f"body {body} -> 400", not d, d)
    # Typed routes do not parse non-JSON content types (spec 0.1).
    v = ctx.by_id["obj-simple"]
    for ctype in ["text/plain", None, "application/vnd.api+json"]:
        r = s.sign(v["rawBody"], ctype=ctype)
        d = diff_body(r, 400, error_pairs("Missing required field 'walletId'. Missing required field 'payload'.", "ValidationError"))
        ctx.check(g, f"Content-Type {ctype!r} -> 400 missing fields", not d, d)
    for ctype in ["Application/JSON", "application/json; charset=utf-8"]:
        r = s.sign(v["rawBody"], ctype=ctype)
        d = diff_body(r, 200, [("payload", v["payloadString"]), ("signature", v["signature"])])
        ctx.check(g, f"Content-Type {ctype!r} is parsed -> 200", not d, d)


def parser_error_diff(r, status):
    """Spec 11.8: body-parser failures keep their status but get the JSON error body of 0.3."""
    if r.status != status:
        return f"status {r.status} != {status}; got {r.short()}"
    if not r.ctype.lower().startswith("application/json") or not _is_obj_pairs(r.pairs):
        return f"not a JSON object body (content-type {r.ctype!r}); got {r.short()}"
    keys = [k for k, _ in r.pairs]
    want = ["error", "message", "name", "bitgoJsVersion", "bitgoExpressVersion"]
    if keys not in (want, want + ["code"]):
        return f"keys {keys} != {want}[+code]"
    o = r.obj
    if o["error"] != o["message"] or not isinstance(o["message"], str) or not o["message"]:
        return f"error/message not equal non-empty strings: {r.short()}"
    return ""


def group_body_parser(ctx, s, fake):
    g = "body-parser"
    for body, label in [('{"walletId":"w","payload":', "truncated JSON"), ('"x"', "top-level string"), ("{'a':1}", "single quotes")]:
        idx = fake.mark()
        r = s.sign(body)
        d = parser_error_diff(r, 400) or ("" if not fake.since(idx) else "upstream called")
        ctx.check(g, f"malformed JSON ({label}) -> 400 JSON error body", not d, d)
    r = s.sign('{"walletId":"w","payload":{}}', ctype="application/json; charset=latin1")
    d = parser_error_diff(r, 415)
    ctx.check(g, "charset=latin1 -> 415 JSON error body", not d, d)

    v = ctx.by_id["obj-simple"]
    prefix = '{"walletId":"%s","payload":{"a":1},"pad":"' % v["walletId"]
    suffix = '"}'
    pad = MAX_BODY - len(prefix) - len(suffix)
    body = (prefix + "x" * pad + suffix).encode()
    assert len(body) == MAX_BODY
    r = s.sign(body)
    d = diff_body(r, 200, [("payload", v["payloadString"]), ("signature", v["signature"])])
    ctx.check(g, f"body of exactly {MAX_BODY} bytes accepted and signed", not d, d)
    body = (prefix + "x" * (pad + 1) + suffix).encode()
    idx = fake.mark()
    r = s.sign(body)
    d = parser_error_diff(r, 413) or ("" if not fake.since(idx) else "upstream called")
    ctx.check(g, f"body of {MAX_BODY + 1} bytes -> 413 JSON error body", not d, d)


def group_upstream_errors(ctx, s, fake):
    """Spec 5.3 relays and 11.12 walletId encoding."""
    g = "upstream-errors"
    v = ctx.by_id["obj-simple"]
    body = v["rawBody"]

    # Unknown wallet: the fake's 404 relayed with name overwritten in place.
    r = s.sign('{"walletId":"f00000000000000000000000000000ff","payload":{"a":1}}')
    d = diff_body(r, 404, [("error", "wallet not found"), ("name", "ApiResponseError"), ("requestId", "r-1"),
                           ("message", "wallet not found")] + VERSIONS)
    ctx.check(g, "upstream 404 wallet not found relayed", not d, d)

    cases = [
        ("502 text/html", 502, "text/html",
         "<html><head><title>T</title></head><body><h1>Bad   gateway</h1>\n<p>upstream\tdown</p></body></html>",
         [("message", "502\nTBad   gateway\nupstream\tdown"), ("name", "ApiResponseError")] + VERSIONS),
        ("400 text/plain sanitised", 400, "text/plain",
         '  x < y & z "q" <b>bold</b>\r\n\r\n\r\n\r\nend  \n \t \nlast  ',
         [("message", '400\nx &lt; y &amp; z "q" bold\n\nend  \n\nlast'), ("name", "ApiResponseError")] + VERSIONS),
        ("empty 500", 500, None, "",
         [("message", "500"), ("name", "ApiResponseError")] + VERSIONS),
        ("400 JSON without error field", 400, "application/json", '{"foo":"bar","message":"m1"}',
         [("foo", "bar"), ("message", '400\n{"foo":"bar","message":"m1"}'), ("name", "ApiResponseError")] + VERSIONS),
    ]
    for label, status, ctype, text, want in cases:
        fake.inject(status, text, ctype=ctype, path_contains="/wallet/")
        r = s.sign(body)
        fake.clear_faults()
        d = diff_body(r, status, want)
        ctx.check(g, f"upstream {label} on wallet GET relayed", not d, d)

    fake.inject(404, '{"error":"key not found","name":"KeyNotFound","requestId":"r-2"}', path_contains="/key/")
    r = s.sign(body)
    fake.clear_faults()
    d = diff_body(r, 404, [("error", "key not found"), ("name", "ApiResponseError"), ("requestId", "r-2"),
                           ("message", "key not found")] + VERSIONS)
    ctx.check(g, "upstream 404 on key GET relayed", not d, d)

    # A slow upstream (1.5 s) is waited for.
    fake.delay_next(1.5)
    r = s.sign(body)
    fake.clear_faults()
    d = diff_body(r, 200, [("payload", v["payloadString"]), ("signature", v["signature"])])
    ctx.check(g, "slow upstream (1.5 s delay) still signs", not d, d)

    # Spec 11.12: walletId is percent-encoded as ONE path segment, so it can never change the URL.
    # Dot segments cannot be sent through a WHATWG URL parser (even as %2E); for those a local
    # 4xx refusal without any upstream call is accepted as well.
    wallet_404 = [("error", "wallet not found"), ("name", "ApiResponseError"), ("requestId", "r-1"),
                  ("message", "wallet not found")] + VERSIONS
    for wid in [v["walletId"] + "?x=1", "a/b c", " ", "%2e%2e", "..", "."]:
        idx = fake.mark()
        r = s.sign(jdump({"walletId": wid, "payload": {"a": 1}}))
        recs = fake.since(idx)
        fake.waive_since(idx)  # their auth is judged here, not again in the global check
        d = ""
        if wid in (".", "..") and not recs and 400 <= r.status < 500:
            pass
        elif len(recs) != 1 or recs[0].method != "GET":
            d = f"upstream calls {upstream_seq(recs)} != one wallet GET"
        else:
            p = recs[0].path
            segs = p.split("/")
            if "?" in p or len(segs) != 6 or segs[:5] != ["", "api", "v2", "ofc", "wallet"] or urllib.parse.unquote(segs[5]) != wid:
                d = f"upstream path {p!r} is not /api/v2/ofc/wallet/<one encoded segment of {wid!r}>"
            elif auth_problems(recs):
                d = f"upstream auth: {auth_problems(recs)}"
            else:
                d = diff_body(r, 404, wallet_404)
        if d and recs:
            d += f"; upstream auth verdict: {recs[0].verdict or 'ok'}; client got {r.short(200)}"
        ctx.check(g, f"walletId {wid!r} encoded as one path segment", not d, d)


def group_signing_paths(ctx, sa, fake1, sb, sd, fake2):
    """Spec 1.4 passphrase/remote-signing decisions and 11.3 wrong-passphrase rendering."""
    g = "sign-paths"
    root0 = ctx.meta_keys["root0"]
    simple = ctx.by_id["obj-simple"]  # root0 key, payload {"a":1}

    def run(s, fake, body, status, want, want_seq, name, extra_check=None):
        idx = fake.mark()
        r = s.sign(body)
        recs = fake.since(idx)
        d = diff_body(r, status, want)
        if not d and upstream_seq(recs) != want_seq:
            d = f"upstream {upstream_seq(recs)} != {want_seq}"
        if not d and auth_problems(recs):
            d = f"upstream auth: {auth_problems(recs)}"
        if not d and extra_check:
            d = extra_check(recs)
        ctx.check(g, name, not d, d)

    wallet = lambda w: ("GET", f"/api/v2/ofc/wallet/{w}")  # noqa: E731
    txsign = lambda w: ("POST", f"/api/v2/ofc/wallet/{w}/tx/sign")  # noqa: E731

    run(sa, fake1, jdump({"walletId": W_REQUIRED, "payload": {"a": 1}}), 500,
        error_pairs(MSG_USER_KEY_REQUIRED, "Error"), [wallet(W_REQUIRED)],
        "no passphrase, userKeySigningRequired default -> 500")
    run(sa, fake1, jdump({"walletId": W_REQUIRED_CS, "payload": {"a": 1}}), 500,
        error_pairs(MSG_USER_KEY_REQUIRED, "Error"), [wallet(W_REQUIRED_CS)],
        "no passphrase, coinSpecific true beats top-level false -> 500")
    run(sa, fake1, jdump({"walletId": W_ONE_KEY, "payload": {"a": 1}}), 500,
        error_pairs(MSG_NO_BITGO_SIGNING, "Error"), [wallet(W_ONE_KEY)],
        "no passphrase, 1 key, not required -> 500 no BitGo signing")

    def txsign_body(expected_payload):
        def chk(recs):
            rec = recs[-1]
            want = jdump({"payload": expected_payload}).encode()
            if rec.body != want:
                return f"tx/sign body {rec.body[:200]!r} != {want!r}"
            ct = rec.headers.get("content-type", "")
            if not ct.lower().startswith("application/json"):
                return f"tx/sign Content-Type {ct!r}"
            return ""
        return chk

    run(sa, fake1, jdump({"walletId": W_REMOTE, "payload": {"z": 1.50, "a": [1, "é"]}}), 200,
        [("payload", '{"z":1.5,"a":[1,"é"]}'), ("signature", CANNED_SIGNATURE)],
        [wallet(W_REMOTE), txsign(W_REMOTE)],
        "2 keys, coinSpecific not required -> remote tx/sign with {payload}", txsign_body('{"z":1.5,"a":[1,"é"]}'))
    run(sa, fake1, jdump({"walletId": W_REMOTE_TOP, "payload": 'raw "string" ✓'}), 200,
        [("payload", 'raw "string" ✓'), ("signature", CANNED_SIGNATURE)],
        [wallet(W_REMOTE_TOP), txsign(W_REMOTE_TOP)],
        "2 keys, top-level not required -> remote tx/sign (string payload verbatim)", txsign_body('raw "string" ✓'))
    fake1.inject(400, '{"error":"sign failed","requestId":"r-9"}', path_contains="/tx/sign")
    run(sa, fake1, jdump({"walletId": W_REMOTE, "payload": {"a": 1}}), 400,
        [("error", "sign failed"), ("requestId", "r-9"), ("message", "sign failed"), ("name", "ApiResponseError")] + VERSIONS,
        [wallet(W_REMOTE), txsign(W_REMOTE)], "upstream 400 on tx/sign relayed")
    fake1.clear_faults()

    run(sa, fake1, jdump({"walletId": W_NO_PRV, "payload": {"a": 1}}), 500,
        error_pairs(MSG_NO_ENCRYPTED_PRV, "Error"), [wallet(W_NO_PRV), ("GET", "/api/v2/ofc/key/knoprv")],
        "keychain without encryptedPrv -> 500")

    wrong = error_pairs(MSG_WRONG_PASSPHRASE, "IncorrectPasswordError", code="wallet_passphrase_incorrect")
    run(sa, fake1, jdump({"walletId": W_WRONG_ENV, "payload": {"a": 1}}), 401, wrong,
        [wallet(W_WRONG_ENV), ("GET", "/api/v2/ofc/key/kroot0")], "wrong env passphrase (v1) -> 401 IncorrectPasswordError")
    run(sa, fake1, insert_passphrase(simple["rawBody"], WRONG_PASSPHRASE), 401, wrong,
        [wallet(simple["walletId"]), ("GET", f"/api/v2/ofc/key/{ctx.key_id(simple['walletId'])}")],
        "wrong body passphrase beats correct env -> 401")
    run(sa, fake1, jdump({"walletPassphrase": root0["walletPassphrase"], "walletId": W_WRONG_ENV, "payload": {"a": 1}}), 200,
        [("payload", simple["payloadString"]), ("signature", simple["signature"])],
        [wallet(W_WRONG_ENV), ("GET", "/api/v2/ofc/key/kroot0")], "correct body passphrase beats wrong env -> 200")
    if sb is not None:
        run(sb, fake1, insert_passphrase(simple["rawBody"], WRONG_PASSPHRASE), 401, wrong,
            [wallet(simple["walletId"]), ("GET", f"/api/v2/ofc/key/{ctx.key_id(simple['walletId'])}")],
            "wrong body passphrase, no env (v1) -> 401")
    if sd is not None:
        run(sd, fake2, insert_passphrase(simple["rawBody"], WRONG_PASSPHRASE), 401, wrong,
            [wallet(simple["walletId"]), ("GET", f"/api/v2/ofc/key/{ctx.key_id(simple['walletId'])}")],
            "wrong body passphrase, no env (v2 envelope) -> 401")
    run(sa, fake1, insert_passphrase(simple["rawBody"], ""), 500, error_pairs(MSG_USER_KEY_REQUIRED, "Error"),
        [wallet(simple["walletId"])], "empty body passphrase with env set -> remote path (no key GET) -> 500")
    if sb is not None:
        run(sb, fake1, simple["rawBody"], 500, error_pairs(MSG_USER_KEY_REQUIRED, "Error"),
            [wallet(simple["walletId"])], "no body passphrase and no env variable -> 500 user key required")

    # keys[0] is URL-encoded as one path segment.
    idx = fake1.mark()
    r = sa.sign(jdump({"walletId": W_ODD_KEY, "payload": {"a": 1}}))
    recs = fake1.since(idx)
    d = diff_body(r, 200, [("payload", simple["payloadString"]), ("signature", simple["signature"])])
    if not d:
        p = recs[-1].path if len(recs) == 2 else ""
        segs = p.split("/")
        if len(recs) != 2 or "?" in p or len(segs) != 6 or segs[:5] != ["", "api", "v2", "ofc", "key"] or urllib.parse.unquote(segs[5]) != ODD_KEY_ID:
            d = f"upstream {upstream_seq(recs)}: key id {ODD_KEY_ID!r} not sent as one encoded segment"
    ctx.check(g, f"key id {ODD_KEY_ID!r} percent-encoded in the key GET", not d, d)


def group_auth(ctx, sa, fake1):
    """Spec 4: legacy tokens, missing token, response HMAC verification (11.5)."""
    g = "upstream-auth"
    v = ctx.by_id["obj-bitgo-example"]
    problems = check_sign_vector(ctx, g, sa, fake1, v, v["rawBody"], token=LEGACY_TOKEN, expect_kind="legacy")
    ctx.check(g, "legacy token -> plain 'Bearer <raw token>' upstream, no HMAC headers, 200", not problems, "; ".join(problems))

    idx = fake1.mark()
    r = sa.sign(v["rawBody"], token=None)
    recs = fake1.since(idx)
    fake1.waive_since(idx)
    d = diff_body(r, 401, error_pairs("Authentication failed", "ApiResponseError"))
    if not d and upstream_seq(recs) != [("GET", f"/api/v2/ofc/wallet/{v['walletId']}")]:
        d = f"upstream {upstream_seq(recs)}"
    ctx.check(g, "no Authorization -> upstream 401 relayed", not d, d)
    if recs:
        h = recs[0].headers
        bad = {k: h.get(k) for k in ("authorization", "auth-timestamp", "hmac") if k in h}
        d = "" if h.get("bitgo-auth-version") == "2.0" and not bad else f"auth headers: BitGo-Auth-Version={h.get('bitgo-auth-version')!r}, unexpected {bad}"
        ctx.check(g, "no token: upstream gets 'BitGo-Auth-Version: 2.0' and no other auth header", not d, d)

    token_pieces = {HMAC_TOKEN[i:i + 10] for i in range(len(HMAC_TOKEN) - 9)}
    for mode in ["corrupt", "missing"]:
        fake1.hmac_mode = mode
        idx = fake1.mark()
        r = sa.sign(v["rawBody"])
        fake1.clear_faults()
        recs = fake1.since(idx)
        d = ""
        if r.status != 511 or not _is_obj_pairs(r.pairs):
            d = f"expected 511 JSON; got {r.short()}"
        else:
            o = r.obj
            keys = [k for k, _ in r.pairs]
            if "error" in o:
                d += "body has an 'error' key; "
            if o.get("message") != "invalid response HMAC" or o.get("name") != "ApiResponseError":
                d += f"message/name {o.get('message')!r}/{o.get('name')!r}; "
            if keys[-4:] != ["message", "name", "bitgoJsVersion", "bitgoExpressVersion"]:
                d += f"key order {keys}; "
            for k in ("requestToken", "bitgoToken"):
                if k in o:
                    d += f"body has {k}; "
            text = r.raw.decode("utf-8", "replace")
            leaked = sorted(p for p in token_pieces if p in text)
            if leaked:
                d += f"body contains token pieces {leaked[:3]}; "
            if upstream_seq(recs) != [("GET", f"/api/v2/ofc/wallet/{v['walletId']}")]:
                d += f"upstream after bad HMAC: {upstream_seq(recs)}; "
            if d:
                d += f"got {r.short()}"
        ctx.check(g, f"{mode} response HMAC -> 511 invalid response HMAC, no token in body", not d, d)


def group_unreachable(ctx):
    g = "upstream-errors"
    port = free_port()  # bound then closed: nothing listens there
    s = ctx.start(f"http://127.0.0.1:{port}", "closed-port")
    if s is None:
        return
    v = ctx.by_id["obj-simple"]
    r = s.sign(v["rawBody"])
    msg = f"connect ECONNREFUSED 127.0.0.1:{port}"
    d = diff_body(r, 500, error_pairs(msg, "Error", code="ECONNREFUSED"))
    ctx.check(g, "upstream unreachable -> 500 ECONNREFUSED", not d, d)


# --------------------------------------------------------------------------------------------
# Signer mode (spec 1.5-1.7, 11.9), signer authentication, forward mode (1.3), key tooling
# --------------------------------------------------------------------------------------------

MSG_FALSY_PAYLOAD = "Missing required field: payload"
MSG_DECRYPT_PREFIX = "Error when trying to decrypt private key: "
MSG_EXTERNAL_AND_SIGNER = "signerMode or signerFileSystemPath is set, but externalSignerUrl is also set."
MSG_SIGNER_AND_LIGHTNING = "signerMode and lightningSignerFileSystemPath cannot be set at the same time."
MSG_GIVING_UP = "giving up after reaching max retry limit of 3"
SIGNER_TOKEN = "acc-signer-" + hashlib.sha256(b"acceptance signer token").hexdigest()[:32]
WRONG_PASSPHRASE_401 = error_pairs(MSG_WRONG_PASSPHRASE, "IncorrectPasswordError", code="wallet_passphrase_incorrect")

# Wallets of the signer-mode error-table key file (spec 1.5 / 1.7 "C" rows).
W_SM_NOENV = "c0000000000000000000000000000001"  # valid v1 envelope (root0), no env passphrase
W_SM_INVALID = "c0000000000000000000000000000002"  # entry "invalid"
W_SM_V3 = "c0000000000000000000000000000003"  # entry {"v":3}
W_SM_NUM = "c0000000000000000000000000000004"  # numeric entry
W_SM_WRONG1 = "c0000000000000000000000000000005"  # v1 envelope, wrong env passphrase
W_SM_WRONG2 = "c0000000000000000000000000000006"  # v2 envelope, wrong env passphrase
W_SM_UNKNOWN = "c0000000000000000000000000000007"  # not in the file, env passphrase set
W_SM_UNKNOWN_NOENV = "c0000000000000000000000000000008"  # not in the file, no env passphrase


def msg_no_env_passphrase(wallet_id):
    return f"Could not find wallet passphrase WALLET_{wallet_id}_PASSPHRASE in environment"


def msg_no_field(wallet_id, path):
    return f"Could not find a field for walletId: {wallet_id} in {path}"


def vector_diff(r, v, falsy_status=400, falsy_want=None):
    """'' if r is the expected answer for sign vector v: {payload, signature}, or for a falsy payload
    (expressRejectsFalsyPayload) signer mode's 400 `Missing required field: payload`."""
    if v.get("expressRejectsFalsyPayload"):
        return diff_body(r, falsy_status, falsy_want or error_pairs(MSG_FALSY_PAYLOAD, "ApiResponseError"))
    problems = sign_body_problems(r, v)
    if problems and r.status != 200:
        problems.append(f"got {r.short(300)}")
    return "; ".join(problems)


def not_found_diff(r, method, path):
    """README: signer mode's 404 for other paths is Express's `Cannot <METHOD> <path>` in the JSON error body."""
    d = parser_error_diff(r, 404)
    if not d and r.obj.get("message") != f"Cannot {method} {path}":
        d = f"message {r.obj.get('message')!r} != 'Cannot {method} {path}'"
    return d


def passphrase_env(pairs):
    return {f"WALLET_{w}_PASSPHRASE": p for w, p in pairs}


def small_vectors(ctx):
    """Three non-falsy sign vectors with different keys, for the small key files."""
    out, labels = [], set()
    for v in ctx.sign_vectors:
        if not v.get("expressRejectsFalsyPayload") and v["payloadString"] is not None and v["keyLabel"] not in labels:
            out.append(v)
            labels.add(v["keyLabel"])
        if len(out) == 3:
            return out
    raise AssertionError("fewer than 3 keys among the sign vectors")


def sm_run_vectors(ctx, g, label, s, vectors, passphrase_of=None, token=None):
    """Every vector through signer instance s (body passphrase from passphrase_of(v) if given)."""
    for v in vectors:
        body = v["rawBody"] if passphrase_of is None else insert_passphrase(v["rawBody"], passphrase_of(v))
        r = s.sign(body, token=token)
        d = vector_diff(r, v)
        if not d and r.status == 200 and label == "v1-env":
            ctx.sm_raw[v["id"]] = r.raw
        ctx.check(g, f"{label} {v['id']}", not d, d)


def setup_signer(ctx):
    """Writes the key files and starts the signer-mode instances early, so that they unlock their
    keys (at startup, README) while the normal-mode groups run."""
    g = "signer-mode"
    wd = Path(ctx.workdir.name)
    vecs = ctx.sign_vectors
    if ctx.quick:  # 5 vectors of different shapes, the falsy payloads and the lone surrogate
        vecs = [v for i, v in enumerate(vecs) if i % 13 == 0 or v.get("expressRejectsFalsyPayload") or v["payloadString"] is None]
    root0 = ctx.meta_keys["root0"]
    simple = ctx.by_id["obj-simple"]  # root0 key, payload {"a":1}

    f1 = wd / "keys-v1.json"
    write_atomic(f1, key_file_text({v["walletId"]: v["encryptedPrv"] for v in vecs}))
    small = small_vectors(ctx)
    fsmall = wd / "keys-small.json"
    write_atomic(fsmall, key_file_text({v["walletId"]: v["encryptedPrv"] for v in small}))
    env1 = passphrase_env((v["walletId"], v["walletPassphrase"]) for v in vecs)
    counter = ConnCounter()
    ctx.closers.append(counter)
    no_upstream = ["--env", "custom", "--customrooturi", f"http://127.0.0.1:{counter.port}", "--disablessl"]
    tfile = wd / "signer.token"
    tfile.write_text(SIGNER_TOKEN + "\n")  # as `echo token > signer.token` writes it
    sm = {"vecs": vecs, "f1": f1, "env1": env1, "small": small, "fsmall": fsmall, "counter": counter, "token_file": tfile}

    # The error-table key file.
    ferr = wd / "keys-errors.json"
    write_atomic(ferr, key_file_text({
        simple["walletId"]: simple["encryptedPrv"],
        W_SM_NOENV: root0["encryptedPrv"],
        W_SM_INVALID: "invalid",
        W_SM_V3: '{"v":3}',
        W_SM_NUM: 12345,
        W_SM_WRONG1: root0["encryptedPrv"],
        W_SM_WRONG2: root0["encryptedPrvV2"],
    }))
    env_err = passphrase_env([(simple["walletId"], simple["walletPassphrase"])] + [
        (w, root0["walletPassphrase"]) for w in (W_SM_INVALID, W_SM_V3, W_SM_NUM, W_SM_UNKNOWN)] + [
        (W_SM_WRONG1, WRONG_PASSPHRASE), (W_SM_WRONG2, WRONG_PASSPHRASE)])

    # Start everything first: the instances unlock their keys concurrently.
    se = ctx.start_mode("sm-env", ["--signerMode", "--signerFileSystemPath", f1], env1, group=g)
    sb = ctx.start_mode("sm-body", ["--signerMode", "--signerFileSystemPath", f1], tail=no_upstream, group=g)
    serr = ctx.start_mode("sm-errors", ["--signerMode", "--signerFileSystemPath", ferr], env_err, group=g)
    v2_vecs = ctx.sign_vectors[::13][:5]
    s2e = s2b = None
    if not ctx.quick:
        f2 = wd / "keys-v2.json"
        write_atomic(f2, key_file_text({v["walletId"]: ctx.envelope(v, 2)[0] for v in v2_vecs}))
        env2 = passphrase_env((v["walletId"], ctx.envelope(v, 2)[1]) for v in v2_vecs)
        s2e = ctx.start_mode("sm-v2-env", ["--signerMode", "--signerFileSystemPath", f2], env2, group=g)
        s2b = ctx.start_mode("sm-v2-body", ["--signerMode", "--signerFileSystemPath", f2], tail=no_upstream, group=g)
    # Signer authentication (groups signer-auth, forward): a small key file (every vector goes through
    # forward mode against sm-env already).
    sa = ctx.start_mode("sm-auth", ["--signerMode", "--signerFileSystemPath", fsmall],
                        passphrase_env((v["walletId"], v["walletPassphrase"]) for v in small),
                        tail=["--auth-token-file", tfile], group="signer-auth")
    sl = ctx.start_mode("sm-allow", ["--signerMode", "--signerFileSystemPath", fsmall],
                        passphrase_env((v["walletId"], v["walletPassphrase"]) for v in small),
                        tail=["--auth-token-file", tfile, "--allowed-wallets", small[0]["walletId"]], group="signer-auth")
    sm.update(env=se, body=sb, errors=serr, v2env=s2e, v2body=s2b, v2_vecs=v2_vecs, ferr=ferr, auth=sa, allow=sl)
    return sm


def group_signer_mode(ctx, sm):
    """Spec 1.5 / 1.7 (mode C): keys from a file, env or body passphrases, no upstream call."""
    g = "signer-mode"
    vecs = sm["vecs"]
    root0 = ctx.meta_keys["root0"]
    simple = ctx.by_id["obj-simple"]
    se, sb, serr, s2e, s2b, v2_vecs, ferr = (sm[k] for k in ("env", "body", "errors", "v2env", "v2body", "v2_vecs", "ferr"))

    if se is not None:
        sm_run_vectors(ctx, g, "v1-env", se, vecs)
    if sb is not None:
        # The (irrelevant) BitGo access token is sent too: it must not make the signer call BitGo.
        sm_run_vectors(ctx, g, "v1-body", sb, vecs,
                       passphrase_of=lambda v: v["walletPassphrase"], token=HMAC_TOKEN)
    if s2e is not None:
        sm_run_vectors(ctx, g, "v2-env", s2e, v2_vecs)
    if s2b is not None:
        sm_run_vectors(ctx, g, "v2-body", s2b, v2_vecs, passphrase_of=lambda v: ctx.envelope(v, 2)[1], token=HMAC_TOKEN)

    if serr is not None:
        ok_simple = [("payload", simple["payloadString"]), ("signature", simple["signature"])]
        no_env = lambda w: error_pairs(msg_no_env_passphrase(w), "Error")  # noqa: E731
        body = lambda w, p=None, payload=None: (  # noqa: E731
            jdump(({"walletPassphrase": p} if p is not None else {}) | {"walletId": w, "payload": {"a": 1} if payload is None else payload}))
        rows = [
            (body(W_SM_NOENV), 500, no_env(W_SM_NOENV), "no body passphrase, no env variable -> 500"),
            (body(W_SM_NOENV, ""), 500, no_env(W_SM_NOENV), "empty body passphrase, no env variable -> 500"),
            (body(W_SM_NOENV, payload=False), 400, error_pairs(MSG_FALSY_PAYLOAD, "ApiResponseError"),
             "falsy payload is refused before the passphrase lookup -> 400"),
            (body(W_SM_UNKNOWN_NOENV), 500, no_env(W_SM_UNKNOWN_NOENV),
             "unknown wallet, no passphrase -> 500 passphrase missing (checked before the file)"),
            (body(W_SM_UNKNOWN), 500, error_pairs(msg_no_field(W_SM_UNKNOWN, ferr), "Error"),
             "unknown wallet (env passphrase) -> 500 Could not find a field"),
            (body(W_SM_UNKNOWN_NOENV, root0["walletPassphrase"]), 500, error_pairs(msg_no_field(W_SM_UNKNOWN_NOENV, ferr), "Error"),
             "unknown wallet (body passphrase) -> 500 Could not find a field"),
            (body(W_SM_INVALID), 500, error_pairs(MSG_DECRYPT_PREFIX + "decrypt: ciphertext is not valid JSON", "Error"),
             "entry \"invalid\" -> 500 ciphertext is not valid JSON"),
            (body(W_SM_V3), 500, error_pairs(MSG_DECRYPT_PREFIX + "decrypt: unknown envelope version 3", "Error"),
             "entry {\"v\":3} -> 500 unknown envelope version 3"),
            (body(W_SM_NUM), 401, WRONG_PASSPHRASE_401, "numeric entry -> 401 IncorrectPasswordError"),
            (body(W_SM_WRONG1), 401, WRONG_PASSPHRASE_401, "wrong env passphrase (v1 envelope) -> 401"),
            (body(W_SM_WRONG2), 401, WRONG_PASSPHRASE_401, "wrong env passphrase (v2 envelope) -> 401"),
            (insert_passphrase(simple["rawBody"], WRONG_PASSPHRASE), 401, WRONG_PASSPHRASE_401,
             "wrong body passphrase beats the correct env one -> 401"),
            (insert_passphrase(simple["rawBody"], ""), 200, ok_simple, "empty body passphrase falls back to env -> 200"),
            (insert_passphrase(simple["rawBody"], simple["walletPassphrase"]), 200, ok_simple, "correct body passphrase -> 200"),
            (body(W_SM_NOENV, root0["walletPassphrase"]), 200, ok_simple, "no env variable, correct body passphrase -> 200"),
            # The key is now unlocked in memory: the passphrase must still be checked on every request.
            (body(W_SM_NOENV, WRONG_PASSPHRASE), 401, WRONG_PASSPHRASE_401, "unlocked key, then a wrong body passphrase -> 401"),
            (body(W_SM_NOENV), 500, no_env(W_SM_NOENV), "unlocked key, then no passphrase -> still 500"),
            ("{}", 400, error_pairs("Missing required field 'walletId'. Missing required field 'payload'.", "ValidationError"),
             "body {} -> 400 ValidationError"),
            (jdump({"walletId": simple["walletId"], "payload": {}, "walletPassphrase": None}), 400,
             error_pairs("Invalid value for 'walletPassphrase': expected string, got 'null'.", "ValidationError"),
             "walletPassphrase null -> 400 ValidationError"),
        ]
        for b, status, want, name in rows:
            r = serr.sign(b)
            d = diff_body(r, status, want)
            ctx.check(g, name, not d, d)
        for method, path in [("GET", "/api/v2/pingexpress"), ("GET", "/api/v1/ping"), ("POST", "/api/v2/user/x"),
                             ("GET", "/api/v2/ofc/signPayload")]:
            r = serr.request(method, path, "{}" if method == "POST" else None)
            d = not_found_diff(r, method, path)
            ctx.check(g, f"{method} {path} -> 404 Cannot {method}", not d, d)


def group_signer_no_upstream(ctx, sm):
    c = sm["counter"]
    ctx.check("signer-mode", "no connection ever reached the BitGo root URI given to signer-mode instances",
              c.count == 0, f"{c.count} connection(s) to 127.0.0.1:{c.port}")


def group_signer_reload(ctx, sm):
    """Spec 11.9: the key file is reloaded on change; a broken file keeps the last good one."""
    g = "signer-reload"
    a, b, c = sm["small"]
    fr = Path(ctx.workdir.name) / "keys-reload.json"
    entries = lambda *vs: key_file_text({v["walletId"]: v["encryptedPrv"] for v in vs})  # noqa: E731
    write_atomic(fr, entries(a, b))
    # Default poll interval (1000 ms); --quick polls every 250 ms to stay short.
    poll_ms = 250 if ctx.quick else 1000
    s = ctx.start_mode("sm-reload", ["--signerMode", "--signerFileSystemPath", fr],
                       passphrase_env((v["walletId"], v["walletPassphrase"]) for v in (a, b, c)),
                       tail=["--key-file-poll-ms", "250"] if ctx.quick else (), group=g)
    if s is None:
        return
    unknown = lambda v: error_pairs(msg_no_field(v["walletId"], fr), "Error")  # noqa: E731

    def poll(fn, limit=6.0):
        t0 = time.time()
        while True:
            d = fn()
            if not d or time.time() - t0 > limit:
                return d, time.time() - t0
            time.sleep(0.2)

    d = diff_body(s.sign(c["rawBody"]), 500, unknown(c))
    ctx.check(g, "wallet not yet in the file -> 500 Could not find a field", not d, d)
    d = vector_diff(s.sign(a["rawBody"]), a)
    ctx.check(g, "wallet in the initial file signs", not d, d)

    write_atomic(fr, entries(a, b, c))
    d, t = poll(lambda: vector_diff(s.sign(c["rawBody"]), c))
    ctx.check(g, f"wallet added by an atomic rewrite signs without a restart ({t:.1f} s)", not d, d)

    write_atomic(fr, '{"' + a["walletId"] + '": "broken')
    time.sleep(2.5 * poll_ms / 1000)  # > 2 poll intervals
    for v in (a, c):
        d = vector_diff(s.sign(v["rawBody"]), v)
        ctx.check(g, f"after a broken rewrite, {v['id']} still signs (last good file kept)", not d, d)
    ctx.check(g, "still running after a broken rewrite", s.proc.poll() is None, f"exited {s.proc.returncode}")

    write_atomic(fr, entries(a, c))
    d, t = poll(lambda: diff_body(s.sign(b["rawBody"]), 500, unknown(b)))
    ctx.check(g, f"a good rewrite after the broken one is picked up: removed wallet -> 500 ({t:.1f} s)", not d, d)
    d = vector_diff(s.sign(c["rawBody"]), c)
    ctx.check(g, "a wallet kept in the rewritten file still signs", not d, d)


def token_leaks(answers, token):
    """Labels of the answers (Resp) whose body or header values contain any 12 characters of the token."""
    pieces = {token[i:i + 12] for i in range(len(token) - 11)}
    bad = []
    for label, r in answers:
        text = r.raw.decode("utf-8", "replace") + " " + " ".join(f"{k}: {v}" for k, v in r.headers.items())
        if any(p in text for p in pieces):
            bad.append(label)
    return bad


def group_signer_auth(ctx, sm):
    """README "Signer authentication": token (X-Signer-Token, or Bearer in signer mode), allowlist."""
    g = "signer-auth"
    tfile = sm["token_file"]
    a, b, _ = sm["small"]
    sa, sl = sm["auth"], sm["allow"]
    answers = []

    def ask(s, label, v, headers, status, body_text=None, scan=True):
        r = s.sign(body_text or v["rawBody"], headers=headers)
        if scan:  # (an answer to a request that carried the token itself may quote what it got)
            answers.append((label, r))
        d = vector_diff(r, v) if status == 200 else parser_error_diff(r, status)
        ctx.check(g, label, not d, d)

    wrong = "acc-wrong-" + hashlib.sha256(b"wrong signer token").hexdigest()[:32]
    if sa is not None:
        v = a
        ask(sa, "no credential -> 401", v, None, 401)
        ask(sa, "wrong X-Signer-Token -> 401", v, {"X-Signer-Token": wrong}, 401)
        ask(sa, "wrong Authorization: Bearer -> 401", v, {"Authorization": f"Bearer {wrong}"}, 401)
        ask(sa, "BitGo access token as Bearer -> 401", v, {"Authorization": f"Bearer {HMAC_TOKEN}"}, 401)
        ask(sa, "X-Signer-Token with a trailing space-separated suffix -> 401", v, {"X-Signer-Token": SIGNER_TOKEN + " x"}, 401, scan=False)
        ask(sa, "X-Signer-Token: <token> -> 200", v, {"X-Signer-Token": SIGNER_TOKEN}, 200)
        ask(sa, "Authorization: Bearer <token> -> 200", v, {"Authorization": f"Bearer {SIGNER_TOKEN}"}, 200)
        r = sa.request("GET", "/api/v2/pingexpress")
        answers.append(("GET /api/v2/pingexpress", r))
    if sl is not None:
        ask(sl, "allowlist: allowed wallet with token -> 200", a, {"X-Signer-Token": SIGNER_TOKEN}, 200)
        ask(sl, "allowlist: other wallet with token -> 403", b, {"X-Signer-Token": SIGNER_TOKEN}, 403)
        ask(sl, "allowlist: wallet in neither list nor file, with token -> 403", a, {"X-Signer-Token": SIGNER_TOKEN}, 403,
            jdump({"walletId": W_SM_UNKNOWN, "payload": {"a": 1}}))
        ask(sl, "allowlist: other wallet without token -> 401", b, None, 401)
        ask(sl, "allowlist: allowed wallet without token -> 401", a, None, 401)
    bad = token_leaks(answers, SIGNER_TOKEN)
    ctx.check(g, f"the token appears in none of the {len(answers)} answers", not bad, f"in: {bad}")
    logs = "".join(s.output() for s in (sa, sl) if s is not None)
    ctx.check(g, "the token appears nowhere in the instances' output", SIGNER_TOKEN not in logs,
              "token found in stdout/stderr")

    # A signer on a non-loopback address without authentication warns loudly (and only then).
    def warn_lines(text):
        return [ln for ln in text.splitlines() if "warn" in ln.lower() and "auth" in ln.lower()]

    so = ctx.start_mode("sm-open", ["--signerMode", "--signerFileSystemPath", sm["fsmall"]], bind="0.0.0.0", group=g)
    soa = ctx.start_mode("sm-open-auth", ["--signerMode", "--signerFileSystemPath", sm["fsmall"]], bind="0.0.0.0",
                         tail=["--auth-token-file", tfile], group=g)
    if so is not None:
        time.sleep(0.2)
        err = so.stderr()
        ctx.check(g, "--bind 0.0.0.0 without authentication: warning on stderr", bool(warn_lines(err)),
                  f"no stderr line with 'warn' and 'auth': {err[-500:]!r}")
        so.stop()
    if soa is not None:
        lines = warn_lines(soa.output())
        ctx.check(g, "--bind 0.0.0.0 with --auth-token-file: no such warning", not lines, f"{lines}")
        soa.stop()
    if sm["env"] is not None:
        lines = warn_lines(sm["env"].output())
        ctx.check(g, "--bind 127.0.0.1 without authentication: no such warning", not lines, f"{lines}")


def group_forward(ctx, sm):
    """Spec 1.3 (mode A) and 11.2: forward to a signer; passphrase not forwarded; Express's retry."""
    g = "forward"
    simple = ctx.by_id["obj-simple"]
    tfile = sm["token_file"]
    fw = lambda target: ["--externalSignerUrl", f"http://127.0.0.1:{target.port}", "--disablessl"]  # noqa: E731
    with_token = ["--external-signer-token-file", tfile]
    bad_request = error_pairs("Bad Request", "Error")
    answers = []

    closed, th = {}, None
    if not ctx.quick:  # 3-5 s of retries, run in the background while the rest goes on
        hold = socket.socket()  # bound but not listening: connections are refused, and no one else gets the port
        hold.bind(("127.0.0.1", 0))
        ctx.closers.append(hold)
        fc = ctx.start_mode("fw-closed", ["--externalSignerUrl", f"http://127.0.0.1:{hold.getsockname()[1]}", "--disablessl"],
                            ready_status=200, group=g)
        if fc is not None:
            def run_closed():
                t0 = time.time()
                closed["r"] = fc.sign(simple["rawBody"])
                closed["t"] = time.time() - t0
            th = threading.Thread(target=run_closed, daemon=True)
            th.start()

    def run_all(s, label, vectors):
        for v in vectors:
            r = s.sign(v["rawBody"])
            answers.append((f"{label} {v['id']}", r))
            d = vector_diff(r, v, falsy_want=bad_request)
            ctx.check(g, f"{label} {v['id']}", not d, d)

    def one(s, name, body, status, want):
        r = s.sign(body)
        answers.append((name, r))
        d = diff_body(r, status, want)
        ctx.check(g, name, not d, d)

    sa, sl, se, sb = sm["auth"], sm["allow"], sm["env"], sm["body"]
    if sa is not None:
        ft = ctx.start_mode("fw-token", fw(sa) + with_token, ready_status=200, group=g)
        if ft is not None:
            run_all(ft, "token -> authenticated signer:", sm["small"] + [v for v in sm["vecs"] if v.get("expressRejectsFalsyPayload")])
            a = sm["small"][0]
            one(ft, "wrong body passphrase is not forwarded: env signature -> 200",
                insert_passphrase(a["rawBody"], WRONG_PASSPHRASE), 200, [("payload", a["payloadString"]), ("signature", a["signature"])])
        fn = ctx.start_mode("fw-no-token", fw(sa), ready_status=200, group=g)
        if fn is not None:
            one(fn, "no token -> authenticated signer: 401 Unauthorized", simple["rawBody"], 401,
                error_pairs("Unauthorized", "Error"))
    if sl is not None:
        fl = ctx.start_mode("fw-allow", fw(sl) + with_token, ready_status=200, group=g)
        if fl is not None:
            a, b, _ = sm["small"]
            one(fl, "allowlisted wallet -> 200", a["rawBody"], 200, [("payload", a["payloadString"]), ("signature", a["signature"])])
            one(fl, "wallet outside the signer's allowlist -> 403 Forbidden", b["rawBody"], 403, error_pairs("Forbidden", "Error"))
    if se is not None:
        fp = ctx.start_mode("fw-plain", fw(se), ready_status=200, group=g)
        if fp is not None:
            run_all(fp, "no auth signer:", sm["vecs"])
    if sb is not None:
        fb = ctx.start_mode("fw-body", fw(sb), ready_status=200, group=g)
        if fb is not None:
            one(fb, "correct body passphrase is not forwarded: signer without env -> 500 Internal Server Error",
                insert_passphrase(simple["rawBody"], simple["walletPassphrase"]), 500,
                error_pairs("Internal Server Error", "Error"))
    bad = token_leaks(answers, SIGNER_TOKEN)
    ctx.check(g, f"the signer token appears in none of the {len(answers)} forwarder answers", not bad, f"in: {bad}")

    if th is not None:
        th.join(30)
        r, t = closed.get("r"), closed.get("t", 0.0)
        d = "no answer within 30 s" if r is None else diff_body(r, 500, error_pairs(MSG_GIVING_UP, "Error"))
        if not d and not 3.0 <= t <= 8.0:
            d = f"answered after {t:.2f} s, expected 3-5 s of retries (1-2 s + 2-3 s)"
        ctx.check(g, f"signer port closed -> 500 {MSG_GIVING_UP!r} after retries ({t:.1f} s)", not d, d)


def group_verify_cli(ctx):
    """README `verify`: every sign vector's signature, with its xpub and with its compressed public key."""
    g = "verify-cli"
    from concurrent.futures import ThreadPoolExecutor
    wd = Path(ctx.workdir.name) / "verify"
    wd.mkdir(exist_ok=True)
    vecs = ctx.sign_vectors
    if ctx.quick:
        vecs = vecs[::13][:5] + [v for v in vecs if v["payloadString"] is None]
    jobs = []  # (name, argv, want_rc)
    for i, v in enumerate(vecs):
        msg = v["payloadString"].encode("utf-8") if v["payloadString"] is not None else bytes.fromhex(v["payloadUtf8Hex"])
        assert len(msg) == v["payloadUtf8Length"], v["id"]
        good = wd / f"{i}.good"
        good.write_bytes(msg)
        bad = wd / f"{i}.bad"
        if msg:
            m = bytearray(msg)
            m[len(m) // 2] ^= 0x01
            bad.write_bytes(bytes(m))
        else:
            bad.write_bytes(b"x")
        sig = bytearray(bytes.fromhex(v["signature"]))
        sig[10] ^= 0x01  # a byte of r
        pub_hex = ctx.meta_keys[v["keyLabel"]]["publicKeyHex"]
        for pk, pkname in [(v["pub"], "xpub"), (pub_hex, "publicKeyHex")]:
            base = [ctx.binary, "verify", "--pub", pk]
            jobs.append((f"{v['id']} ({pkname}) valid", base + ["--signature", v["signature"], "--payload-file", str(good)], 0))
            jobs.append((f"{v['id']} ({pkname}) one payload byte changed -> invalid",
                         base + ["--signature", v["signature"], "--payload-file", str(bad)], 1))
            if pkname == "xpub":
                jobs.append((f"{v['id']} ({pkname}) one signature byte changed -> invalid",
                             base + ["--signature", bytes(sig).hex(), "--payload-file", str(good)], 1))

    def run(job):
        name, argv, want = job
        try:
            p = subprocess.run(argv, capture_output=True, timeout=30, env=clean_env(), stdin=subprocess.DEVNULL, cwd=wd)
            return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            return None, "", "timeout"

    with ThreadPoolExecutor(max_workers=4) as ex:
        results = list(ex.map(run, jobs))
    for (name, argv, want), (rc, out, err) in zip(jobs, results):
        verdict = out.strip()
        ok = rc == want and (verdict == "valid" if want == 0 else verdict.startswith("invalid"))
        ctx.check(g, name, ok, f"exit {rc} (want {want}), stdout {out[:200]!r}, stderr {err[:200]!r}")


def group_sign_cli(ctx, sm):
    """README `sign`: the output is byte-identical to the signer-mode route's body for the same vector."""
    g = "sign-cli"
    from concurrent.futures import ThreadPoolExecutor
    wd = Path(ctx.workdir.name) / "sign"
    wd.mkdir(exist_ok=True)
    vecs = [v for v in sm["vecs"] if not v.get("expressRejectsFalsyPayload")]
    if not ctx.quick:  # one process (and one key decryption) per vector: a quarter of them is enough
        vecs = [v for i, v in enumerate(vecs) if i % 4 == 0 or v["payloadString"] is None]

    def run(iv):
        i, v = iv
        pf = wd / f"{i}.payload"
        pf.write_text(v["payloadRaw"], encoding="utf-8")
        argv = [ctx.binary, "sign", "--key-file", str(sm["f1"]), "--wallet-id", v["walletId"], "--payload-file", str(pf)]
        env = clean_env({f"WALLET_{v['walletId']}_PASSPHRASE": v["walletPassphrase"]})
        try:
            return subprocess.run(argv, capture_output=True, timeout=30, env=env, stdin=subprocess.DEVNULL, cwd=wd)
        except subprocess.TimeoutExpired:
            return None

    with ThreadPoolExecutor(max_workers=4) as ex:
        results = list(ex.map(run, enumerate(vecs)))
    for v, p in zip(vecs, results):
        if p is None:
            ctx.check(g, v["id"], False, "timeout")
            continue
        r = Resp(200 if p.returncode == 0 else p.returncode, {"content-type": "application/json"}, p.stdout)
        d = vector_diff(r, v)
        route = ctx.sm_raw.get(v["id"])
        if not d and route is not None and p.stdout != route:
            d = f"output {p.stdout[:200]!r} != signer-mode route body {route[:200]!r}"
        if d:
            d += f"; exit {p.returncode}, stderr {p.stderr[:200]!r}"
        ctx.check(g, v["id"], not d, d)


def group_startup_signer(ctx, sm):
    """Spec 7.3 checks 5-8 and 11.6 (non-zero exit, `Fatal error: …`, never listening); the banner."""
    g = "startup-signer"
    wd = Path(ctx.workdir.name)
    f1 = sm["f1"]
    missing = wd / "no-such-dir" / "keys.json"
    broken = wd / "broken.json"
    broken.write_text('{"a": "b",')
    fsm = lambda p: ["--signerMode", "--signerFileSystemPath", str(p)]  # noqa: E731
    ext = ["--externalSignerUrl", "http://127.0.0.1:1", "--disablessl"]
    light = ["--lightningSignerFileSystemPath", str(f1)]
    cases = [  # (name, args, env, expected message; None = `Failed to parse <path> - <reason>`, path)
        ("missing key file", fsm(missing), None, None, missing),
        ("broken key file", fsm(broken), None, None, broken),
        ("missing key file via BITGO_SIGNER_MODE/BITGO_SIGNER_FILE_SYSTEM_PATH", [],
         {"BITGO_SIGNER_MODE": "1", "BITGO_SIGNER_FILE_SYSTEM_PATH": str(missing)}, None, missing),
        ("step 5: --externalSignerUrl with signer mode", ext + fsm(f1), None, MSG_EXTERNAL_AND_SIGNER, None),
        ("step 5: --externalSignerUrl with --signerFileSystemPath only", ext + ["--signerFileSystemPath", str(f1)], None,
         MSG_EXTERNAL_AND_SIGNER, None),
        ("step 5 before step 8 (missing key file)", ext + fsm(missing), None, MSG_EXTERNAL_AND_SIGNER, None),
        ("step 6: --signerFileSystemPath alone", ["--signerFileSystemPath", str(f1)], None, MSG_SIGNER_MODE_ALONE, None),
        ("step 7: signer mode with --lightningSignerFileSystemPath", fsm(f1) + light, None, MSG_SIGNER_AND_LIGHTNING, None),
        ("step 7 before step 8 (missing key file)", fsm(missing) + light, None, MSG_SIGNER_AND_LIGHTNING, None),
    ]
    for name, args, env, msg, path in cases:
        port = free_port()
        argv = [ctx.binary] + args + ["--port", str(port), "--bind", "127.0.0.1"]
        try:
            p = subprocess.run(argv, capture_output=True, timeout=10, env=clean_env(env), stdin=subprocess.DEVNULL, cwd=wd)
        except subprocess.TimeoutExpired:
            ctx.check(g, f"{name}: exits non-zero with Fatal error", False, "still running after 10 s (it listens?)")
            continue
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        problems = []
        if p.returncode == 0:
            problems.append("exit status 0")
        if msg is not None:
            if f"Fatal error: {msg}" not in out:
                problems.append(f"output lacks 'Fatal error: {msg}'")
        else:
            prefix = f"Fatal error: Failed to parse {path} - "
            line = next((ln for ln in out.splitlines() if prefix in ln), None)
            if line is None or not line.split(prefix, 1)[1].strip():
                problems.append(f"output lacks '{prefix}<reason>'")
        if "BitGo-Express running" in out:
            problems.append("printed the running banner")
        ctx.check(g, f"{name}: exits non-zero with Fatal error", not problems,
                  "; ".join(problems) + f"; rc={p.returncode} output={out[-400:]!r}")

    for key, s, lines in [("env", sm["env"], ["BitGo-Express running", "Environment: test"]),
                          ("body", sm["body"], ["BitGo-Express running", "Environment: custom",
                                                f"Custom root URI: http://127.0.0.1:{sm['counter'].port}"])]:
        if s is None:
            continue
        out = s.stdout()
        for line in lines + [f"Base URI: http://127.0.0.1:{s.port}", "External signer mode: true"]:
            ctx.check(g, f"{s.name} banner contains {line!r}", line in out, f"stdout: {out[-500:]!r}")


# --------------------------------------------------------------------------------------------
# Generic proxy (5.1-5.3, 11.12), Go Network sign-and-forward (5.5, 11.10), audit log
# --------------------------------------------------------------------------------------------

NET_ENTERPRISE = "E1"
NET_AMOUNTS = {"09684b38-49ed-4cf6-a28e-c3a459494c69": {"BTC": "100", "ETH": "-200"},
               "136c1c69-8654-484f-8c5f-591b334a084f": {"XRP": "300", "BTC": "-400"}}


def setup_network(ctx):
    """One normal-mode instance with --state-dir in front of a fake that serves one trading account
    (vector obj-simple's wallet, v1 envelope, env passphrase) and the Go Network endpoints."""
    v = ctx.by_id["obj-simple"]
    key = ctx.meta_keys[v["keyLabel"]]
    fake = FakeBitGo("net")
    ctx.fakes.append(fake)
    fake.add_key(ctx.key_id(v["walletId"]), v["encryptedPrv"], v["pub"])
    fake.add_wallet(v["walletId"], [ctx.key_id(v["walletId"])])
    fake.net = FakeNetwork({NET_ENTERPRISE: key["publicKeyHex"]})
    state = Path(ctx.workdir.name) / "net-state"
    fake.net.audit_path = state / "audit.log"
    s = ctx.start(fake.root_uri, "net", {f"WALLET_{v['walletId']}_PASSPHRASE": v["walletPassphrase"]},
                  extra_args=["--state-dir", state, "--trading-account", f"{NET_ENTERPRISE}={v['walletId']}"])
    if s is None:
        return None
    return types.SimpleNamespace(s=s, fake=fake, net=fake.net, state=state, vector=v, key=key,
                                 wallet=v["walletId"], passphrase=v["walletPassphrase"],
                                 signed=[], payloads=[])


def _path_only(p):
    return p.split("?", 1)[0]


def group_proxy(ctx, net):
    g = "proxy"
    s, fake = net.s, net.fake

    # 1. A pre-signed settlement through route 8: exact bytes, Content-Type, otp, enterprise-id, query.
    path = "/api/network/v1/enterprises/E1/partners/settlements?dryRun=true&b=2"
    raw = ('{ "externalId" :  "proxy-1" ,\n\t"nonce":"1",\r\n  "notes" : "caf\\u00e9 ✓",'
           '  "settlementAmounts":{ "a" : { "BTC" : "1.50" } }, "fee" : 1.50 ,\n'
           '  "payload" : "{\\"x\\":1}" ,   "signature":"' + "1f" + "ab" * 64 + '"  }  \n').encode("utf-8")
    ctype = "application/json; charset=UTF-8"
    fake.inject(201, '{ "b" : 2, "a" : 1.50 }', path_contains="/partners/settlements?dryRun=true",
                headers={"X-Up": "1", "Set-Cookie": "up=1"})
    idx = fake.mark()
    r = s.request("POST", path, raw, ctype=ctype,
                  headers={"X-Bitgo-Otp": "000000", "Cookie": "sid=abc", "X-Custom": "keep-out"})
    recs = fake.since(idx)
    fake.clear_faults()
    one = recs[0] if len(recs) == 1 else None
    label = f"POST {path} (payload+signature present)"
    ctx.check(g, f"{label}: exactly one upstream request, same method and path+query",
              one is not None and (one.method, one.path) == ("POST", path), f"upstream {upstream_seq(recs)}")
    if one is not None:
        ctx.check(g, f"{label}: body arrives byte-for-byte", one.body == raw, f"got {one.body!r}, sent {raw!r}")
        ctx.check(g, f"{label}: client's exact Content-Type", one.headers.get("content-type") == ctype,
                  f"content-type {one.headers.get('content-type')!r} != {ctype!r}")
        ctx.check(g, f"{label}: x-bitgo-otp forwarded", one.headers.get("x-bitgo-otp") == "000000",
                  f"x-bitgo-otp {one.headers.get('x-bitgo-otp')!r}")
        ctx.check(g, f"{label}: enterprise-id: E1", one.headers.get("enterprise-id") == "E1",
                  f"enterprise-id {one.headers.get('enterprise-id')!r}")
        leaked = [h for h in ("cookie", "x-custom") if h in one.headers]
        ctx.check(g, f"{label}: Cookie and X-Custom dropped", not leaked, f"forwarded {leaked}")
        ctx.check(g, f"{label}: valid HMAC over exactly those bytes", not one.verdict, one.verdict)
    d = ""
    if r.status != 201 or r.raw != b'{"b":2,"a":1.5}' or not r.ctype.lower().startswith("application/json"):
        d = f"got {r.status} {r.ctype!r} {r.raw!r}, want 201 application/json b'{{\"b\":2,\"a\":1.5}}'"
    elif "x-up" in r.headers or "set-cookie" in r.headers:
        d = f"upstream headers relayed: {r.headers}"
    ctx.check(g, f"{label}: upstream 201 {{ \"b\" : 2, \"a\" : 1.50 }} -> 201 {{\"b\":2,\"a\":1.5}}, no upstream headers", not d, d)

    # 2. Route table (5.1) and 11.12's byte-for-byte query.
    for client, want, eid in [
        ("/api/v2/user//me?x=a//b", "/api/v2/user/me?x=a//b", None),
        ("/api/v2/user/a%2Fb?x=%20&y=%2F", "/api/v2/user/a/b?x=%20&y=%2F", None),
        ("/API/V2/USER/me?Q=1", "/api/v2/user/me?Q=1", None),
        ("/api/v2/ofc/foo%2Fbar?x=1", "/api/v2/ofc/foo/bar?x=1", None),
        ("/api/network/v1/foo//bar?q=1//2", "/api/network/v1/foo//bar?q=1//2", None),
        ("/api/foo/v2/enterprises/E2/x%2Fy?z=1", "/api/foo/v2/enterprises/E2/x%2Fy?z=1", "E2"),
        ("/oauth/token?a=1", "/oauth/token?a=1", None),
    ]:
        fake.inject(200, '{"ok" : true}')
        idx = fake.mark()
        r = s.request("GET", client)
        recs = fake.since(idx)
        fake.clear_faults()
        d = ""
        if upstream_seq(recs) != [("GET", want)]:
            d = f"upstream {upstream_seq(recs)} != [('GET', {want!r})]"
        elif eid and recs[0].headers.get("enterprise-id") != eid:
            d = f"enterprise-id {recs[0].headers.get('enterprise-id')!r} != {eid!r}"
        elif auth_problems(recs):
            d = f"upstream auth: {auth_problems(recs)}"
        elif r.status != 200 or r.raw != b'{"ok":true}':
            d = f"client got {r.short(200)}"
        ctx.check(g, f"GET {client} -> upstream {want}" + (f" with enterprise-id {eid}" if eid else ""), not d, d)
    # Unknown coin: 11.12 forwards the query byte-for-byte (the reference re-emitted decoded values).
    client = "/api/v2/unknowncoin/x?b=%2F&c=%26d&e=%3D"
    fake.inject(200, "{}")
    idx = fake.mark()
    s.request("GET", client)
    recs = fake.since(idx)
    fake.clear_faults()
    ok = len(recs) == 1 and recs[0].path == "/api/v2/unknowncoin/x?b=%2F&c=%26d&e=%3D" and not recs[0].verdict
    ctx.check(g, f"GET {client}: query forwarded byte-for-byte (11.12)", ok, f"upstream {recs}")
    fake.inject(200, "")
    idx = fake.mark()
    r = s.request("HEAD", "/api/v2/user/me")
    recs = fake.since(idx)
    fake.clear_faults()
    ctx.check(g, "HEAD /api/v2/user/me is forwarded upstream as HEAD (11.12)",
              upstream_seq(recs) == [("HEAD", "/api/v2/user/me")], f"upstream {upstream_seq(recs)}; client {r.status}")

    # 3. Bodies (5.2).
    for method, client, body, ctype, want_body, want_ctype, label in [
        ("DELETE", "/api/v2/user/x/del", None, None, b"{}", "application/json", "body-less DELETE -> {}"),
        ("PUT", "/api/v2/user/x/put", b"hello", "text/plain", b"{}", "application/json", "PUT text/plain hello -> {}"),
        ("POST", "/api/v2/user/x/post", b'{ "k" : 1 }', None, b'{ "k" : 1 }', "application/json",
         "POST without Content-Type -> raw bytes as application/json"),
        ("PATCH", "/api/v2/user/x/patch", b'{ "k" : 1 }', "application/json", b'{ "k" : 1 }', "application/json",
         "PATCH JSON -> exact bytes"),
    ]:
        fake.inject(200, "{}")
        idx = fake.mark()
        r = s.request(method, client, body, ctype=ctype)
        recs = fake.since(idx)
        fake.clear_faults()
        d = ""
        if upstream_seq(recs) != [(method, client)]:
            d = f"upstream {upstream_seq(recs)}"
        else:
            u = recs[0]
            if u.body != want_body:
                d = f"upstream body {u.body!r} != {want_body!r}"
            elif u.headers.get("content-type") != want_ctype:
                d = f"upstream content-type {u.headers.get('content-type')!r} != {want_ctype!r}"
            elif u.headers.get("content-length") != str(len(want_body)):
                d = f"upstream content-length {u.headers.get('content-length')!r} != {len(want_body)}"
            elif u.verdict:
                d = f"upstream auth: {u.verdict}"
            elif r.status != 200:
                d = f"client got {r.short(200)}"
        ctx.check(g, f"{label} (HMAC over the sent bytes)", not d, d)

    # 4. Upstream error relayed (5.3) and non-API paths.
    fake.inject(404, '{"error":"thing not found","name":"NotFound","requestId":"r-9"}', path_contains="/user/missing")
    r = s.request("GET", "/api/v2/user/missing?x=1")
    fake.clear_faults()
    d = diff_body(r, 404, [("error", "thing not found"), ("name", "ApiResponseError"), ("requestId", "r-9"),
                           ("message", "thing not found")] + VERSIONS)
    ctx.check(g, "upstream 404 JSON relayed with name overwritten in place", not d, d)
    for client in ["/foo", "/API/network/v1/x"]:
        idx = fake.mark()
        r = s.request("GET", client)
        d = diff_body(r, 404, error_pairs("bitgo-express can only proxy BitGo API requests", "ApiResponseError"))
        if not d and fake.since(idx):
            d = f"upstream called: {upstream_seq(fake.since(idx))}"
        ctx.check(g, f"GET {client} -> 404 bitgo-express can only proxy BitGo API requests", not d, d)


def _settlement_posts(recs, path):
    return [x for x in recs if x.method == "POST" and _path_only(x.path) == path]


def _json_or_none(raw):
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _secret_forms(text):
    """A secret as it could appear in bytes: raw UTF-8 and JSON-escaped (ASCII) forms."""
    return {text.encode("utf-8"), json.dumps(text)[1:-1].encode("utf-8")}


def group_network(ctx, net):
    g = "network"
    s, fake, fn = net.s, net.fake, net.net
    pub = net.key["publicKeyHex"]
    eid = NET_ENTERPRISE
    v1 = f"/api/network/v1/enterprises/{eid}/partners/settlements"
    v2 = f"/api/network/v2/enterprises/{eid}/partners/settlements"
    signing = f"/api/network/v1/enterprises/{eid}/partners/settlements-signing"

    # The harness's own secp256k1 code against the SDK vectors (recovery) and itself (signing).
    vecs = ctx.sign_vectors if not ctx.quick else ctx.sign_vectors[::13][:5]
    bad = [v["id"] for v in vecs
           if btc_recover(bytes.fromhex(v["payloadUtf8Hex"]) if v["payloadString"] is None else v["payloadString"].encode("utf-8"),
                          v["signature"]) != ctx.meta_keys[v["keyLabel"]]["publicKeyHex"]]
    own = btc_sign(b"harness", net.key["privateKeyHex"])
    if btc_recover(b"harness", own) != pub or btc_recover(b"harness!", own) == pub:
        bad.append("own signature round trip")
    ctx.check(g, f"harness secp256k1 recovery reproduces {len(vecs)} SDK vector keys", not bad, f"mismatch: {bad}")

    def post(path, obj_or_raw, **kw):
        raw = obj_or_raw if isinstance(obj_or_raw, bytes) else json.dumps(obj_or_raw, indent=2, ensure_ascii=False)
        idx, creates = fake.mark(), fn.creates
        r = s.request("POST", path, raw, **kw)
        return r, fake.since(idx), fn.creates - creates

    def stored(external_id):
        with fn.lock:
            return fn.settlements.get((eid, external_id))

    # 1. Sign-and-forward: no payload, no signature.
    base = {"walletId": net.wallet, "externalId": "accept-settlement-1", "notes": "this is a settlement note ✓",
            "settlementAmounts": NET_AMOUNTS}
    label = "v1 settlement without payload/signature"
    r, recs, created = post(v1, base)
    st = stored(base["externalId"])
    d = diff_body(r, 201, [("settlement", st[1] if st else "<none created>")])
    ctx.check(g, f"{label}: 201 with the fake's settlement", not d, d)
    subs = _settlement_posts(recs, v1)
    ctx.check(g, f"{label}: one settlements POST, one creation", len(subs) == 1 and created == 1,
              f"{len(subs)} POSTs, {created} creations; upstream {upstream_seq(recs)}")
    sent = _json_or_none(subs[0].body) if subs else None
    if isinstance(sent, dict):
        problems = []
        if not re.fullmatch(r"[0-9a-f]{64}", str(sent.get("nonce"))):
            problems.append(f"nonce {sent.get('nonce')!r} is not 64 hex")
        if sent.get("payload") != fn.canonical(eid, sent) or sent.get("payload") not in fn.issued:
            problems.append(f"payload {str(sent.get('payload'))[:120]!r} is not the fake's canonical payload")
        if btc_recover(str(sent.get("payload")).encode("utf-8"), str(sent.get("signature"))) != pub:
            problems.append(f"signature {sent.get('signature')!r} does not recover to {pub}")
        ctx.check(g, f"{label}: the fake got a 64-hex nonce, its own payload and a valid signature", not problems,
                  "; ".join(problems))
        ctx.check(g, f"{label}: the signature was in the audit log before it reached the fake",
                  fn.audited_first.get(sent.get("signature")) is True, f"audited first: {fn.audited_first.get(sent.get('signature'))}")
        parts = btc_split_sig(str(sent.get("signature")))
        ctx.check(g, f"{label}: signature is 130 lowercase hex, header 0x1f-0x22, low-S (spec 2)",
                  parts is not None and 31 <= parts[0] <= 34 and parts[2] <= SECP_N // 2, f"signature {sent.get('signature')!r}")
        extra = [k for k in ("walletId", "walletPassphrase") if k in sent]
        kept = {k: sent.get(k) for k in ("externalId", "notes", "settlementAmounts")}
        want = {k: base[k] for k in kept}
        ctx.check(g, f"{label}: no walletId/walletPassphrase upstream, client's fields kept",
                  not extra and kept == want, f"extra {extra}; fields {kept} != {want}")
        net.signed.append(sent.get("signature"))
        net.payloads.append(sent.get("payload"))
        asks = [x for x in recs if _path_only(x.path) == signing]
        ask = _json_or_none(asks[-1].body) if asks else None
        d = ""
        if not isinstance(ask, dict):
            d = f"no settlements-signing request (upstream {upstream_seq(recs)})"
        elif asks[-1].headers.get("enterprise-id") != eid:
            d = f"enterprise-id {asks[-1].headers.get('enterprise-id')!r}"
        elif {k: ask.get(k) for k in ("externalId", "notes", "settlementAmounts", "nonce")} != \
                {k: sent.get(k) for k in ("externalId", "notes", "settlementAmounts", "nonce")}:
            d = f"asked with {ask}, submitted {sent}"
        elif "walletId" in ask or "walletPassphrase" in ask:
            d = f"signing request carries {ask}"
        ctx.check(g, f"{label}: canonical payload asked from settlements-signing with enterprise-id and the same fields",
                  not d, d)
    else:
        ctx.check(g, f"{label}: the fake got a JSON settlement", False, f"upstream {upstream_seq(recs)}")
    leaks = [x for x in fake.since(0) if any(f in x.body for f in _secret_forms(net.passphrase))]
    ctx.check(g, f"{label}: the passphrase never goes upstream", not leaks, f"in {leaks}")

    # 2. Identical retry: the same settlement, no second creation.
    r, recs, created = post(v1, base)
    d = ""
    if r.status not in (200, 201) or not isinstance(r.obj, dict) or r.obj.get("settlement") != (st[1] if st else None):
        d = f"got {r.short()}, want 200/201 with settlement {st[1] if st else None}"
    ctx.check(g, "identical retry returns the same settlement", not d, d)
    ctx.check(g, "identical retry: no second creation at the fake", created == 0,
              f"{created} creations; upstream {upstream_seq(recs)}")

    # 3. Same externalId, other amounts: 409 (ofc-signer's or the fake's), nothing created.
    other = dict(base, settlementAmounts={"09684b38-49ed-4cf6-a28e-c3a459494c69": {"BTC": "101"}})
    r, recs, created = post(v1, other)
    d = "" if r.status == 409 and isinstance(r.obj, dict) and isinstance(r.obj.get("message"), str) else f"got {r.short()}"
    ctx.check(g, "same externalId with other amounts -> 409 JSON error", not d, d)
    ctx.check(g, "same externalId with other amounts: no creation", created == 0, f"{created} creations")

    # 4. Passphrase in the body: used, never forwarded; a wrong one is 401 (11.3) and nothing is sent.
    body2 = dict(base, externalId="accept-settlement-2", walletPassphrase=net.passphrase)
    r, recs, created = post(v1, body2)
    subs = _settlement_posts(recs, v1)
    sent = _json_or_none(subs[0].body) if subs else None
    d = ""
    if r.status != 201 or created != 1:
        d = f"got {r.short()}; {created} creations"
    elif not isinstance(sent, dict) or "walletPassphrase" in sent or "walletId" in sent:
        d = f"submitted {subs[0].body[:300] if subs else None!r}"
    ctx.check(g, "body walletPassphrase: created, passphrase not forwarded", not d, d)
    if isinstance(sent, dict):
        net.signed.append(sent.get("signature"))
        net.payloads.append(sent.get("payload"))
    body3 = dict(base, externalId="accept-settlement-3", walletPassphrase=WRONG_PASSPHRASE)
    r, recs, created = post(v1, body3)
    d = ""
    o = r.obj if isinstance(r.obj, dict) else {}
    if r.status != 401 or o.get("name") != "IncorrectPasswordError" or o.get("code") != "wallet_passphrase_incorrect" \
            or o.get("message") != MSG_WRONG_PASSPHRASE:
        d = f"got {r.short()}"
    elif _settlement_posts(recs, v1) or created:
        d = f"submitted anyway: {upstream_seq(recs)}"
    elif WRONG_PASSPHRASE.encode() in r.raw:
        d = "passphrase echoed"
    ctx.check(g, "wrong body walletPassphrase -> 401 IncorrectPasswordError, nothing submitted", not d, d)

    # README: --trading-account <enterpriseId>=<walletId> names the account when the body does not.
    body8 = {k: val for k, val in base.items() if k != "walletId"}
    body8["externalId"] = "accept-default-account-1"
    r, recs, created = post(v1, body8)
    st8 = stored("accept-default-account-1")
    d = diff_body(r, 201, [("settlement", st8[1] if st8 else "<none created>")])
    ctx.check(g, "no walletId: --trading-account E1=<wallet> signs it, created", not d and created == 1, d or f"{created} creations")
    if st8:
        net.signed.append(st8[0]["signature"])
        net.payloads.append(st8[0]["payload"])
    other_path = "/api/network/v1/enterprises/E9/partners/settlements"
    r, recs, created = post(other_path, body8)
    ctx.check(g, "no walletId and no --trading-account for E9 -> 4xx, nothing submitted",
              400 <= r.status < 500 and not _settlement_posts(recs, other_path), f"got {r.short(200)}; upstream {upstream_seq(recs)}")

    # 5. v2 settlements: cutoffAt required.
    r, recs, created = post(v2, dict(base, externalId="accept-v2-nocutoff"))
    ctx.check(g, "v2 settlement without cutoffAt -> 4xx, no creation", 400 <= r.status < 500 and created == 0,
              f"got {r.short()}; {created} creations")
    if not ctx.quick:
        body4 = dict(base, externalId="accept-v2-1", cutoffAt="2026-01-26T00:31:26+0000")
        r, recs, created = post(v2, body4)
        subs = _settlement_posts(recs, v2)
        sent = _json_or_none(subs[0].body) if subs else None
        st4 = stored("accept-v2-1")
        d = diff_body(r, 201, [("settlement", st4[1] if st4 else "<none created>")])
        if not d and (created != 1 or not isinstance(sent, dict) or sent.get("cutoffAt") != body4["cutoffAt"]):
            d = f"{created} creations; submitted {subs[0].body[:300] if subs else None!r}"
        ctx.check(g, "v2 settlement with cutoffAt: signed (payload covers cutoffAt) and created", not d, d)
        if isinstance(sent, dict):
            net.signed.append(sent.get("signature"))
            net.payloads.append(sent.get("payload"))

        # Concurrent identical requests: one creation, one settlement.
        body5 = dict(base, externalId="accept-concurrent-1")
        creates0 = fn.creates
        answers = [None] * 4

        def go(i):
            answers[i] = s.request("POST", v1, json.dumps(body5))

        threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        st5 = stored("accept-concurrent-1")
        ids = {a.obj.get("settlement", {}).get("id") if isinstance(a.obj, dict) else None for a in answers}
        ok = fn.creates - creates0 == 1 and all(a.status in (200, 201) for a in answers) and st5 and ids == {st5[1]["id"]}
        ctx.check(g, "4 concurrent identical settlements: one creation, all answered with it", ok,
                  f"{fn.creates - creates0} creations; answers {[a.short(120) for a in answers]}")
        with fn.lock:
            net.signed.extend(o["signature"] for (e, x), (o, _) in fn.settlements.items() if x == "accept-concurrent-1")

        # An upstream 5xx leaves the request pending: the retry re-sends the very same signed bytes.
        body6 = dict(base, externalId="accept-retry-1")
        fake.inject(503, '{"error":"try again later"}', path_is=v1)
        r1, recs1, created1 = post(v1, body6)
        fake.clear_faults()
        r2, recs2, created2 = post(v1, body6)
        subs = _settlement_posts(recs1, v1) + _settlement_posts(recs2, v1)
        st6 = stored("accept-retry-1")
        d = ""
        if r1.status != 503:
            d = f"first answer {r1.short(200)}, want the upstream 503"
        else:
            d = diff_body(r2, 201, [("settlement", st6[1] if st6 else "<none created>")])
        if not d and (len(subs) != 2 or subs[0].body != subs[1].body or created1 + created2 != 1):
            d = f"{len(subs)} POSTs, identical: {len(subs) == 2 and subs[0].body == subs[1].body}; {created1 + created2} creations"
        ctx.check(g, "upstream 503, then retry: the same signed bytes re-sent, one creation", not d, d)
        if st6:
            net.signed.append(st6[0]["signature"])
            net.payloads.append(st6[0]["payload"])

        # README: a definitive 4xx rejection is forgotten, so the request can be sent again.
        body7 = dict(base, externalId="accept-rejected-1")
        fake.inject(400, '{"error":"rejected for now"}', path_is=v1)
        r1, recs1, created1 = post(v1, body7)
        fake.clear_faults()
        r2, recs2, created2 = post(v1, body7)
        st7 = stored("accept-rejected-1")
        d = "" if r1.status == 400 else f"first answer {r1.short(200)}, want the upstream 400"
        d = d or diff_body(r2, 201, [("settlement", st7[1] if st7 else "<none created>")])
        ctx.check(g, "upstream 400, then the same request: sent again and created", not d, d)
        if st7:
            net.signed.append(st7[0]["signature"])
            net.payloads.append(st7[0]["payload"])

    # 6. Pre-signed settlements pass through byte-for-byte; the fake judges them.
    priv = net.key["privateKeyHex"]

    def presigned(external_id, nonce, amounts, key_hex):
        fields = {"externalId": external_id, "nonce": nonce, "notes": "pre-signed \u2713 ✓", "settlementAmounts": amounts}
        payload = FakeNetwork.canonical(eid, fields)
        sig = btc_sign(payload.encode("utf-8"), key_hex)
        return ('{\n  "externalId" : ' + json.dumps(external_id) + ',\t"nonce":' + json.dumps(nonce) + ',\r\n'
                ' "notes": "pre-signed \\u2713 ✓",  "settlementAmounts": ' + json.dumps(amounts, indent=4) + ',\n'
                ' "payload": ' + json.dumps(payload) + ', "signature" : "' + sig + '"\n}\n').encode("utf-8")

    raw = presigned("accept-presigned-1", "1", NET_AMOUNTS, priv)
    r, recs, created = post(v1, raw)
    st6 = stored("accept-presigned-1")
    d = diff_body(r, 201, [("settlement", st6[1] if st6 else "<none created>")])
    if not d and (upstream_seq(recs) != [("POST", v1)] or recs[0].body != raw):
        d = f"upstream {upstream_seq(recs)}; body identical: {bool(recs) and recs[-1].body == raw}"
    if not d and (recs[0].headers.get("content-type") != "application/json" or recs[0].headers.get("enterprise-id") != eid):
        d = f"upstream headers {recs[0].headers}"
    ctx.check(g, "pre-signed settlement: byte-for-byte passthrough, no signing calls, created", not d, d)
    r, recs, created = post(v1, raw)
    d = diff_body(r, 200, [("settlement", st6[1] if st6 else "<none created>")])
    if not d and (created or upstream_seq(recs) != [("POST", v1)] or recs[0].body != raw):
        d = f"{created} creations; upstream {upstream_seq(recs)}"
    ctx.check(g, "pre-signed replay: the fake's 200 with the existing settlement, relayed", not d, d)
    if not ctx.quick:
        r, recs, created = post(v1, presigned("accept-presigned-1", "2", {"x": {"BTC": "1"}}, priv))
        d = diff_body(r, 409, [("error", "settlement accept-presigned-1 exists with other content"),
                               ("name", "ApiResponseError"),
                               ("message", "settlement accept-presigned-1 exists with other content")] + VERSIONS)
        ctx.check(g, "pre-signed, same externalId, other content: the fake's 409 relayed, no creation",
                  not d and created == 0, d or f"{created} creations")
        forged = presigned("accept-presigned-2", "1", NET_AMOUNTS, ctx.meta_keys["root1"]["privateKeyHex"])
        r, recs, created = post(v1, forged)
        d = diff_body(r, 400, [("error", "invalid signature"), ("name", "ApiResponseError"),
                               ("message", "invalid signature")] + VERSIONS)
        ctx.check(g, "pre-signed with another key's signature: the fake's 400 invalid signature relayed", not d and created == 0,
                  d or f"{created} creations")


def _audit_verify(ctx, args, cwd=None):
    p = subprocess.run([ctx.binary, "audit", "verify"] + [str(a) for a in args], capture_output=True, timeout=30,
                       env=clean_env(), stdin=subprocess.DEVNULL, cwd=cwd)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def group_audit(ctx, net):
    g = "audit"
    s, v = net.s, net.vector
    # One signPayload with the legacy token: every signature is audited, the token never is.
    r = s.sign(v["rawBody"], token=LEGACY_TOKEN)
    ok = not sign_body_problems(r, v)
    ctx.check(g, "signPayload on the network instance (legacy token) signs the vector", ok, r.short())
    if ok:
        net.signed.append(v["signature"])
    log = net.state / "audit.log"
    if not ctx.check(g, f"{log} exists", log.is_file(), f"state dir holds {sorted(os.listdir(net.state)) if net.state.is_dir() else 'nothing'}"):
        return
    mode = log.stat().st_mode & 0o777
    ctx.check(g, "audit.log has mode 0600", mode == 0o600, f"mode {oct(mode)}")
    data = log.read_bytes()
    rc, out = _audit_verify(ctx, [log])
    lines = data.count(b"\n")
    ok = rc == 0 and re.search(rf"\bok: {lines} records\b", out) is not None
    ctx.check(g, f"ofc-signer audit verify <state-dir>/audit.log -> exit 0, ok: {lines} records", ok, f"rc={rc} output={out[-400:]!r}")
    recorded = set()
    for line in data.splitlines():
        obj = _json_or_none(line)
        if isinstance(obj, dict) and isinstance(obj.get("signature"), str):
            recorded.add(obj["signature"])
    missing = [x for x in net.signed if x not in recorded]
    ctx.check(g, f"every signature ofc-signer produced ({len(net.signed)}) is in the log", not missing, f"missing {missing}")
    secrets_ = {"access token (v2)": HMAC_TOKEN, "access token (legacy)": LEGACY_TOKEN,
                "wallet passphrase": net.passphrase, "wrong passphrase": WRONG_PASSPHRASE,
                "settlement payload marker": SETTLEMENT_MARKER}
    for i, p in enumerate(net.payloads):
        secrets_[f"settlement payload {i + 1}"] = p
    found = [name for name, text in secrets_.items() if any(f in data for f in _secret_forms(text))]
    ctx.check(g, "no access token, passphrase or payload text in the log", not found, f"found {found}")

    # One changed byte in the middle -> exit 1 naming the broken line.
    pos = len(data) // 2
    while pos < len(data) and (data[pos] in b"\n" or data[pos] >= 0x80):
        pos += 1
    if pos < len(data):
        orig = data[pos]
        new = ord("0") if orig != ord("0") else ord("1")
        tampered = data[:pos] + bytes([new]) + data[pos + 1:]
        bad = Path(ctx.workdir.name) / "audit-tampered.log"
        bad.write_bytes(tampered)
        line_no = data[:pos].count(b"\n") + 1
        rc, out = _audit_verify(ctx, [bad])
        ok = rc == 1 and re.search(rf"\bline {line_no}\b", out) is not None
        ctx.check(g, f"one byte changed (offset {pos}, line {line_no} of {lines}) -> exit 1 naming line {line_no}", ok,
                  f"rc={rc} output={out[-400:]!r}")
    rc, out = _audit_verify(ctx, [Path(ctx.workdir.name) / "no-such-audit.log"])
    ctx.check(g, "unreadable log -> exit 2", rc == 2, f"rc={rc} output={out[-300:]!r}")

    if ctx.quick:
        return
    # The documented default: ./ofc-signer-state/port-<port>/audit.log (`--help`, OFC_SIGNER_STATE_DIR),
    # and `audit verify` without FILE finds it from the same directory.
    d = ctx.start(net.fake.root_uri, "net-default", {f"WALLET_{net.wallet}_PASSPHRASE": net.passphrase})
    if d is None:
        return
    r = d.sign(v["rawBody"])
    default_log = Path(d.tmp.name) / "ofc-signer-state" / f"port-{d.port}" / "audit.log"
    ok = not sign_body_problems(r, v) and default_log.is_file()
    ctx.check(g, "without --state-dir the log is ./ofc-signer-state/port-<port>/audit.log", ok,
              f"sign: {r.short(150)}; files: {[str(p.relative_to(d.tmp.name)) for p in Path(d.tmp.name).rglob('*')]}")
    rc, out = _audit_verify(ctx, [], cwd=d.tmp.name)
    ctx.check(g, "ofc-signer audit verify (no FILE) from that directory -> exit 0, ok: 1 records",
              rc == 0 and re.search(r"\bok: 1 records\b", out) is not None, f"rc={rc} output={out[-300:]!r}")


def group_all_upstream_auth(ctx):
    recs = [r for f in ctx.fakes for r in f.since(0) if not r.waived]
    bad = auth_problems(recs)
    ctx.check("upstream-auth", f"all {len(recs)} upstream requests passed the fake's HMAC/legacy checks",
              not bad, f"{len(bad)} failed, e.g. {bad[:3]}")


# --------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(REPO / "target" / "debug" / "ofc-signer"))
    ap.add_argument("--quick", action="store_true", help="v1 env run + 5 v2 vectors; signer/forward/CLI groups on a subset")
    a = ap.parse_args()
    binary = str(Path(a.binary).resolve())
    if not os.access(binary, os.X_OK):
        print(f"binary {binary} not found; build it with `cargo build` first", file=sys.stderr)
        return 2

    t0 = time.time()
    ctx = Ctx(binary, a.quick)
    try:
        sm = ctx.run(setup_signer)  # started early: they unlock their keys while the normal-mode groups run
        ctx.run(group_selftest)
        fake1 = ctx.make_fake(1)  # serves every sign vector's wallet with its v1 (SJCL) envelope
        fake2 = ctx.make_fake(2)  # same walletIds, v2 (Argon2id) envelopes
        sa = ctx.start(fake1.root_uri, "v1-env", ctx.env_passphrases(1))
        ctx.run(group_startup_rules, sa)
        if sa is not None:
            ctx.run(group_local_routes, sa, fake1)
            ctx.run(group_sign_vectors, "v1-env", sa, fake1, 1, False, ctx.sign_vectors)
        sb = sd = None
        if not ctx.quick:
            sb = ctx.start(fake1.root_uri, "v1-body")
            if sb is not None:
                ctx.run(group_sign_vectors, "v1-body", sb, fake1, 1, True, ctx.sign_vectors)
        sc = ctx.start(fake2.root_uri, "v2-env", ctx.env_passphrases(2))
        v2_vectors = ctx.sign_vectors if not ctx.quick else ctx.sign_vectors[::13][:5]
        if sc is not None:
            ctx.run(group_sign_vectors, "v2-env", sc, fake2, 2, False, v2_vectors)
        if not ctx.quick:
            sd = ctx.start(fake2.root_uri, "v2-body")
            if sd is not None:
                ctx.run(group_sign_vectors, "v2-body", sd, fake2, 2, True, ctx.sign_vectors)
        if sa is not None:
            ctx.run(group_decrypt_vectors, sa)
            ctx.run(group_validation, sa, fake1)
            ctx.run(group_body_parser, sa, fake1)
            ctx.run(group_upstream_errors, sa, fake1)
            ctx.run(group_signing_paths, sa, fake1, sb, sd, fake2)
            ctx.run(group_auth, sa, fake1)
        net = ctx.run(setup_network)
        if net is not None:
            ctx.run(group_proxy, net)
            ctx.run(group_network, net)
            ctx.run(group_audit, net)
        ctx.run(group_unreachable)
        ctx.run(group_all_upstream_auth)
        if sm is not None:
            ctx.run(group_signer_mode, sm)
            ctx.run(group_signer_reload, sm)
            ctx.run(group_signer_auth, sm)
            ctx.run(group_forward, sm)
            ctx.run(group_sign_cli, sm)
            ctx.run(group_startup_signer, sm)
            ctx.run(group_signer_no_upstream, sm)
        ctx.run(group_verify_cli)
    finally:
        ctx.close()
    rep = ctx.report
    print(f"\n{rep.passed} passed, {rep.failed} failed ({time.time() - t0:.1f} s)")
    if rep.failures:
        print("Failures:")
        for f in rep.failures:
            print("  " + f)
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
