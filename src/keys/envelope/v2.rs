//! v2 envelopes: `encryptV2.ts` (`encryptV2`, `decryptV2`, `parseV2Envelope`) and the session
//! envelopes of `encryptionSession.ts` (an HKDF-SHA256 step between Argon2id and AES-GCM).
//!
//! Decoding follows the SDK exactly: the io-ts codec (all failing members reported, in
//! declaration order), Node's lenient `Buffer.from(s, 'base64')`, `@bitgo/argon2` (hash-wasm
//! 4.12) parameter validation, Node 20's WebCrypto AES-GCM (IVs of 12 to 128 bytes, 128-bit
//! tag) and `TextDecoder` (lossy UTF-8, leading BOM removed).

use aes::cipher::KeyInit;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{Argon2Params, DecryptError, DecryptErrorKind, EncryptError, EncryptErrorKind, Json};

/// `ARGON2_MAX` of encryptV2.ts: the decoder's DoS caps.
const MAX_MEMORY: u32 = 262_144;
const MAX_ITERATIONS: u32 = 16;
const MAX_PARALLELISM: u32 = 16;
/// `HKDF_INFO` of encryptV2.ts.
const HKDF_INFO: &[u8] = b"bitgo-v2-session";
/// WebCrypto's `OperationError` message, which `BitGoAPI.decryptAsync` maps to
/// `incorrect password`.
const OPERATION_FAILED: &str = "The operation failed for an operation-specific reason";
/// IV lengths Node 20's WebCrypto AES-GCM accepts (observed: 11 and 129 bytes fail).
const MIN_IV: usize = 12;
const MAX_IV: usize = 128;

/// A decoded v2 envelope (`V2EnvelopeCodec`).
struct Envelope<'a> {
    m: u32,
    t: u32,
    p: u32,
    salt: &'a str,
    iv: &'a str,
    ct: &'a str,
    hkdf_salt: Option<&'a str>,
    adata: Option<&'a str>,
}

/// `decodeWithCodec(V2EnvelopeCodec, parsed, 'v2 decrypt: invalid envelope')`.
fn parse_envelope(json: &Json) -> Result<Envelope<'_>, DecryptError> {
    let mut errors: Vec<String> = Vec::new();
    let mut bounded = |key: &str, label: &str, max: u32| -> u32 {
        let value = super::json_get(json, key);
        match value.and_then(super::json_number) {
            Some(x) if x.fract() == 0.0 && x >= 1.0 && x <= f64::from(max) => x as u32,
            _ => {
                let got = value.map_or_else(|| "undefined".to_owned(), super::js_json_stringify);
                errors.push(format!(
                    "{label}: expected integer in [1, {max}], got {got}"
                ));
                0
            }
        }
    };
    let m = bounded("m", "memorySize", MAX_MEMORY);
    let t = bounded("t", "iterations", MAX_ITERATIONS);
    let p = bounded("p", "parallelism", MAX_PARALLELISM);
    let mut base64_string = |key: &str, required: bool| -> Option<&str> {
        let value = super::json_get(json, key);
        match value.and_then(super::json_str) {
            Some(s) if !s.is_empty() => Some(s),
            _ => {
                // t.partial only reports members that are present.
                if required || value.is_some() {
                    errors.push("expected non-empty base64 string".to_owned());
                }
                None
            }
        }
    };
    let salt = base64_string("salt", true);
    let iv = base64_string("iv", true);
    let ct = base64_string("ct", true);
    let hkdf_salt = base64_string("hkdfSalt", false);
    let adata = match super::json_get(json, "adata") {
        None => None,
        Some(v) => match super::json_str(v) {
            Some(s) => Some(s),
            None => {
                // t.string's failure carries no message; decodeWithCodec prints 'unknown'.
                errors.push("unknown".to_owned());
                None
            }
        },
    };
    match (salt, iv, ct) {
        (Some(salt), Some(iv), Some(ct)) if errors.is_empty() => Ok(Envelope {
            m,
            t,
            p,
            salt,
            iv,
            ct,
            hkdf_salt,
            adata,
        }),
        _ => Err(DecryptError::invalid(format!(
            "v2 decrypt: invalid envelope: {}",
            errors.join("; ")
        ))),
    }
}

/// `decryptV2(password, ciphertext)` on the already parsed envelope.
pub(super) fn decrypt(password: &str, json: &Json) -> Result<Zeroizing<String>, DecryptError> {
    let env = parse_envelope(json)?;
    let salt = node_base64(env.salt);
    let iv = node_base64(env.iv);
    let ct = node_base64(env.ct);
    let aad = env.adata.map_or(&[][..], str::as_bytes);
    let ikm =
        argon2id(password.as_bytes(), &salt, env.m, env.t, env.p).map_err(DecryptError::invalid)?;
    let key = match env.hkdf_salt {
        Some(hkdf_salt) => {
            let mut okm = Zeroizing::new([0u8; 32]);
            hkdf::Hkdf::<Sha256>::new(Some(&node_base64(hkdf_salt)), &*ikm)
                .expand(HKDF_INFO, &mut *okm)
                .map_err(|_| DecryptError::new(DecryptErrorKind::Other, OPERATION_FAILED))?;
            okm
        }
        None => ikm,
    };
    webcrypto_aes_gcm_decrypt(&key, iv, ct, aad)
}

/// `subtle.decrypt({name: 'AES-GCM', iv, tagLength: 128, additionalData}, key, ct)` of Node 20,
/// then `new TextDecoder().decode(plaintext)`.
fn webcrypto_aes_gcm_decrypt(
    key: &[u8; 32],
    iv: Vec<u8>,
    mut ct: Vec<u8>,
    aad: &[u8],
) -> Result<Zeroizing<String>, DecryptError> {
    use aes_gcm::aead::AeadInOut;
    if ct.len() < 16 {
        // Node's own check, before the cipher job (not an OperationError the SDK maps).
        return Err(DecryptError::invalid("The provided data is too small."));
    }
    let operation_failed =
        || DecryptError::new(DecryptErrorKind::WrongPassphrase, OPERATION_FAILED);
    if !(MIN_IV..=MAX_IV).contains(&iv.len()) {
        // Node 20's WebCrypto AES-GCM job fails for other IV lengths (observed), with its
        // generic OperationError.
        return Err(operation_failed());
    }
    let pt_len = ct.len() - 16;
    let (body, tag) = ct.split_at_mut(pt_len);
    let ok = if iv.len() == 12 {
        let (Ok(aead), Ok(nonce), Ok(tag)) = (
            aes_gcm::Aes256Gcm::new_from_slice(key),
            aes_gcm::Nonce::<aes_gcm::aead::consts::U12>::try_from(iv.as_slice()),
            aes_gcm::Tag::<aes_gcm::aead::consts::U16>::try_from(&*tag),
        ) else {
            return Err(operation_failed());
        };
        aead.decrypt_inout_detached(&nonce, aad, body.into(), &tag)
            .is_ok()
    } else {
        super::AesCipher::new(key).is_some_and(|aes| {
            aes.gcm_open_composed(&super::GcmIv::Bytes { iv, stray: 0 }, aad, body, tag)
        })
    };
    if !ok {
        zeroize::Zeroize::zeroize(&mut ct);
        return Err(operation_failed());
    }
    ct.truncate(pt_len);
    let plaintext = Zeroizing::new(ct);
    // TextDecoder('utf-8'): drop one leading BOM, replace invalid sequences with U+FFFD.
    let bytes = plaintext
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&plaintext);
    Ok(Zeroizing::new(String::from_utf8_lossy(bytes).into_owned()))
}

/// Node 20's `Buffer.from(s, 'base64')`: both alphabets, every other character skipped, the
/// first `=` ends the input. Node reads each UTF-16 code unit's low byte (so `Ł`, U+0141,
/// counts as `A`, and a surrogate like U+D83D as `=`).
pub(crate) fn node_base64(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    let (mut acc, mut nbits) = (0u32, 0u32);
    for unit in s.encode_utf16() {
        let c = (unit & 0xff) as u8;
        let v = match c {
            b'=' => break,
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push(((acc >> nbits) & 0xff) as u8);
            acc &= (1 << nbits) - 1;
        }
    }
    out
}

/// `argon2id({password, salt, memorySize, iterations, parallelism, hashLength: 32})` of
/// `@bitgo/argon2` (hash-wasm 4.12.0): Argon2id v1.3, 32-byte output, with hash-wasm's
/// validation messages.
fn argon2id(
    password: &[u8],
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, String> {
    argon2_check(password, salt, m, t, p)?;
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(|e| format!("argon2: {e}"))?;
    let mut out = Zeroizing::new([0u8; 32]);
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(password, salt, &mut *out)
        .map_err(|e| format!("argon2: {e}"))?;
    Ok(out)
}

/// hash-wasm's `validateOptions`, in its order (hashLength is always 32 here).
fn argon2_check(password: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> Result<(), String> {
    if password.is_empty() {
        return Err("Password must be specified".to_owned());
    }
    if salt.len() < 8 {
        return Err("Salt should be at least 8 bytes long".to_owned());
    }
    if t < 1 {
        return Err("Iterations should be a positive number".to_owned());
    }
    if p < 1 {
        return Err("Parallelism should be a positive number".to_owned());
    }
    if u64::from(m) < 8 * u64::from(p) {
        return Err("Memory size should be at least 8 * parallelism.".to_owned());
    }
    Ok(())
}

/// `encryptV2(password, plaintext, {salt, iv, memorySize, iterations, parallelism, adata})`.
pub(super) fn encrypt(
    password: &str,
    plaintext: &str,
    params: Argon2Params,
    adata: Option<&str>,
    salt: [u8; 16],
    iv: [u8; 12],
) -> Result<String, EncryptError> {
    use aes_gcm::aead::AeadInOut;
    let invalid = |m: String| EncryptError::new(EncryptErrorKind::InvalidParameters, m);
    let Argon2Params { m, t, p } = params;
    argon2_check(password.as_bytes(), &salt, m, t, p).map_err(invalid)?;
    // Stricter than encryptV2: never write an envelope decryptV2 rejects.
    for (value, label, max) in [
        (m, "memorySize", MAX_MEMORY),
        (t, "iterations", MAX_ITERATIONS),
        (p, "parallelism", MAX_PARALLELISM),
    ] {
        if value > max {
            return Err(invalid(format!(
                "{label}: expected integer in [1, {max}], got {value}"
            )));
        }
    }
    let key = argon2id(password.as_bytes(), &salt, m, t, p).map_err(invalid)?;
    let adata = adata.filter(|a| !a.is_empty());
    let aad = adata.map_or(&[][..], str::as_bytes);
    let mut buf = Zeroizing::new(plaintext.as_bytes().to_vec());
    let tag = aes_gcm::Aes256Gcm::new_from_slice(&*key)
        .ok()
        .and_then(|aead| {
            aead.encrypt_inout_detached(&iv.into(), aad, buf.as_mut_slice().into())
                .ok()
        })
        .ok_or_else(|| invalid("AES-GCM encryption failed".to_owned()))?;
    buf.extend_from_slice(&tag);
    let mut out = format!(
        r#"{{"v":2,"m":{m},"t":{t},"p":{p},"salt":"{}","iv":"{}","ct":"{}""#,
        super::base64_encode(&salt),
        super::base64_encode(&iv),
        super::base64_encode(&buf),
    );
    if let Some(a) = adata {
        out.push_str(r#","adata":"#);
        out.push_str(&super::js_json_quote(a));
    }
    out.push('}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const XPRV: &str = crate::keys::xprv::test_fixtures::SPEC_TEST_XPRV;

    /// Spec 9.2: Argon2id KAT (modules/argon2/test/argon2.test.ts).
    #[test]
    fn argon2_kat() {
        let out = argon2id(&[1; 32], &[2; 16], 32, 3, 4).unwrap();
        assert_eq!(
            out.as_slice(),
            hex("03aab965c12001c9d7d0d2de33192c0494b684bb148196d73c1df1acaf6d0c2e")
        );
    }

    /// Spec 9.2: the v2 envelope (key and byte-exact text).
    #[test]
    fn spec_9_2_v2() {
        let salt: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let iv: [u8; 12] = hex("a0a1a2a3a4a5a6a7a8a9aaab").try_into().unwrap();
        let key = argon2id(b"test-wallet-passphrase", &salt, 65536, 3, 4).unwrap();
        assert_eq!(
            key.as_slice(),
            hex("0fbf0dad9c20c8e1286526dc06a3c059c0ea4fc3ebe2e8b01c1411ebfeffcf7c")
        );
        let want = r#"{"v":2,"m":65536,"t":3,"p":4,"salt":"AAECAwQFBgcICQoLDA0ODw==","iv":"oKGio6Slpqeoqaqr","ct":"u7cbzN3bYGDkiAhi84EO7USxBwxlmpJ60b9ozh074dnqwOt5IvvVJXn1oIytkk3c2hRismFJtmai7FeswvJZlYeQQNQ0IVeoRqwDLXa14B3Ulhf56xmfu9nOtCiNkG6ev59OOhqOEIQPLu+BMd7/dHGtA3O3yrngCrAfuZZwtA=="}"#;
        let got = encrypt(
            "test-wallet-passphrase",
            XPRV,
            Argon2Params::DEFAULT,
            None,
            salt,
            iv,
        );
        assert_eq!(got.unwrap(), want);
        let plain = super::super::decrypt("test-wallet-passphrase", want).unwrap();
        assert_eq!(plain.as_str(), XPRV);
    }

    /// `Buffer.from(s, 'base64')` fixtures.
    #[test]
    fn reference_node_base64() {
        let r = super::super::tests::reference();
        for case in r["nodeBase64"].as_array().unwrap() {
            let input = case["input"].as_str().unwrap();
            assert_eq!(
                node_base64(input),
                hex(case["hex"].as_str().unwrap()),
                "{input:?}"
            );
        }
    }

    /// `sdk-api encryptV2()` fixtures: byte-exact text.
    #[test]
    fn reference_encrypt_v2() {
        let r = super::super::tests::reference();
        let cases = r["encryptV2"].as_array().unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let n = |k: &str| case[k].as_u64().unwrap() as u32;
            let got = encrypt(
                case["password"].as_str().unwrap(),
                case["plaintext"].as_str().unwrap(),
                Argon2Params {
                    m: n("m"),
                    t: n("t"),
                    p: n("p"),
                },
                case["adata"].as_str(),
                hex(case["salt"].as_str().unwrap()).try_into().unwrap(),
                hex(case["iv"].as_str().unwrap()).try_into().unwrap(),
            )
            .unwrap();
            assert_eq!(got, case["expected"].as_str().unwrap());
        }
    }

    #[test]
    fn argon2_validation_messages() {
        // hash-wasm 4.12.0 (node): messages and their order.
        assert_eq!(
            argon2id(b"", &[0; 16], 8, 1, 1).unwrap_err(),
            "Password must be specified"
        );
        assert_eq!(
            argon2id(b"x", &[0; 7], 0, 0, 0).unwrap_err(),
            "Salt should be at least 8 bytes long"
        );
        assert_eq!(
            argon2id(b"x", &[0; 8], 8, 0, 0).unwrap_err(),
            "Iterations should be a positive number"
        );
        assert_eq!(
            argon2id(b"x", &[0; 8], 8, 1, 0).unwrap_err(),
            "Parallelism should be a positive number"
        );
        assert_eq!(
            argon2id(b"x", &[0; 8], 15, 1, 2).unwrap_err(),
            "Memory size should be at least 8 * parallelism."
        );
        assert!(argon2id(b"x", &[0; 8], 16, 1, 2).is_ok());
    }

    #[test]
    fn encrypt_parameter_errors() {
        let e = |m, t, p| {
            encrypt("pw", "x", Argon2Params { m, t, p }, None, [0; 16], [0; 12])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(e(8, 0, 1), "Iterations should be a positive number");
        assert_eq!(e(8, 1, 0), "Parallelism should be a positive number");
        assert_eq!(
            e(15, 1, 2),
            "Memory size should be at least 8 * parallelism."
        );
        assert_eq!(
            e(8, 17, 1),
            "iterations: expected integer in [1, 16], got 17"
        );
        let e = encrypt(
            "",
            "x",
            Argon2Params { m: 8, t: 1, p: 1 },
            None,
            [0; 16],
            [0; 12],
        );
        assert_eq!(e.unwrap_err().message(), "Password must be specified");
    }
}
