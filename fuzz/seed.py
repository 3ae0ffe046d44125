#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, from the SDK vectors (tests/vectors/sdk-vectors.json) and
the demo key file: fuzz/corpus/<target>/<n>. Run from anywhere; existing seeds are kept."""
import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests/vectors/sdk-vectors.json").read_text(encoding="utf-8"))


def seeds():
    for v in VECTORS["sign"]:
        yield "canonicalise", v["rawBody"]
        yield "request_body", v["rawBody"]
        if isinstance(v.get("payloadRaw"), str):
            yield "canonicalise", v["payloadRaw"]
        yield "xprv", v["xprv"]
        yield "xprv", v["pub"]
        yield "envelope", v["walletPassphrase"] + "\0" + v["encryptedPrv"]
    for kind in ("decrypt", "decrypt_wrong_password", "decrypt_invalid"):
        for v in VECTORS[kind]:
            envelope = v["encryptedPrv"]
            if isinstance(envelope, str):
                yield "envelope", str(v.get("passphrase") or "") + "\0" + envelope
    for kind in ("hmac_request", "hmac_response"):
        for v in VECTORS[kind]:
            yield "hmac_path", v["url"]
    for v in VECTORS["hmac_v4_request"]:
        yield "hmac_path", v["inputUrl"]
    key_file = ROOT / "demo/encryptedPrivKeys.json"
    if key_file.exists():
        yield "key_file", key_file.read_text(encoding="utf-8")
    yield "key_file", json.dumps({v["walletId"]: v["encryptedPrv"] for v in VECTORS["sign"][:8]})


def main():
    count = 0
    for target, text in seeds():
        data = text.encode("utf-8", "surrogatepass")
        directory = ROOT / "fuzz/corpus" / target
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / hashlib.sha1(data).hexdigest()
        if not path.exists():
            path.write_bytes(data)
            count += 1
    print(f"{count} new seeds under fuzz/corpus/")


if __name__ == "__main__":
    main()
