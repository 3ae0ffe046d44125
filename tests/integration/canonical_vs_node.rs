//! Differential test of the canonicaliser against V8: random JSON texts (duplicate keys,
//! integer-like keys, extreme numbers, escapes, lone surrogates, odd whitespace) go through
//! ofc-signer's `JSON.stringify(JSON.parse(text))` and through Node's, byte for byte.
//!
//! Needs `node` on `PATH` (any version with well-formed `JSON.stringify`, Node 12+). Without it
//! the test says so and passes; `.ci/run` installs Node when it can. `OFC_SIGNER_DIFF_CASES`
//! sets how many texts (default 20 000) and `OFC_SIGNER_DIFF_SEED` the seed.

use std::io::Write;
use std::process::{Command, Stdio};

use ofc_signer::js_json;

/// A small deterministic PRNG (xorshift64*): the same seed gives the same texts everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "0.1",
    "1e21",
    "1e20",
    "123456789012345678901",
    "1e-7",
    "1e-6",
    "0.000001",
    "5e-324",
    "2e-324",
    "1.7976931348623157e308",
    "1e309",
    "-1e400",
    "123456789012345678901234567890",
    "9007199254740993",
    "0.30000000000000004",
    "1.5E+10",
    "2.50",
    "100e-2",
    "4294967295",
    "1E3",
    "-0.0",
];

const KEYS: &[&str] = &[
    "a",
    "b",
    "0",
    "1",
    "10",
    "2",
    "01",
    "-1",
    "4294967294",
    "4294967295",
    "1.5",
    "",
    "__proto__",
    "\\u0030",
    "é",
    "\\ud800",
    "😀",
    " ",
];

const STRING_PARTS: &[&str] = &[
    "plain",
    "\\n",
    "\\t",
    "\\\"",
    "\\\\",
    "\\/",
    "\\b",
    "\\f",
    "\\r",
    "\\u0000",
    "\\u001f",
    "\\u007f",
    "\\u2028",
    "\\u2029",
    "\\ud800",
    "\\udfff",
    "\\ud83d\\ude00",
    "\\ud83d",
    "\\ude00x",
    "😀",
    "é",
    "\u{7f}",
    "\u{2028}",
    "\\u00e9",
    "\\uFFFF",
    " ",
];

const SPACE: &[&str] = &["", "", "", " ", "\n", "\t", "\r\n  "];

fn value(rng: &mut Rng, depth: usize, out: &mut String) {
    let choice = if depth > 4 {
        rng.below(4)
    } else {
        rng.below(7)
    };
    match choice {
        0 => out.push_str(rng.pick(NUMBERS)),
        1 => out.push_str(rng.pick(&["true", "false", "null"])),
        2 | 3 => string(rng, out),
        4 => {
            out.push('[');
            let n = rng.below(4);
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(rng.pick(SPACE));
                value(rng, depth + 1, out);
                out.push_str(rng.pick(SPACE));
            }
            out.push(']');
        }
        _ => {
            out.push('{');
            let n = rng.below(5);
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(rng.pick(SPACE));
                out.push('"');
                out.push_str(rng.pick(KEYS));
                out.push('"');
                out.push_str(rng.pick(SPACE));
                out.push(':');
                value(rng, depth + 1, out);
            }
            out.push('}');
        }
    }
}

fn string(rng: &mut Rng, out: &mut String) {
    out.push('"');
    for _ in 0..rng.below(4) {
        out.push_str(rng.pick(STRING_PARTS));
    }
    out.push('"');
}

/// A text: mostly valid JSON, sometimes damaged (both sides must then refuse it).
fn text(rng: &mut Rng) -> String {
    let mut out = String::new();
    out.push_str(rng.pick(SPACE));
    value(rng, 0, &mut out);
    out.push_str(rng.pick(SPACE));
    if rng.below(20) == 0 && !out.is_empty() {
        let cut = rng.below(out.len());
        if out.is_char_boundary(cut) {
            out.truncate(cut);
        }
    }
    out
}

/// Node's answer for each text: `JSON.stringify(JSON.parse(text))`, or `null` when it throws.
fn node_canonical(texts: &[String]) -> Option<Vec<Option<String>>> {
    // `setEncoding`: a UTF-8 character split across two stdin chunks must not be garbled.
    let script = "let d='';process.stdin.setEncoding('utf8');\
        process.stdin.on('data',c=>d+=c).on('end',()=>{\
        const out=JSON.parse(d).map(t=>{try{return JSON.stringify(JSON.parse(t))}catch(e){return null}});\
        process.stdout.write(JSON.stringify(out));});";
    let mut child = match Command::new("node")
        .args(["-e", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!(
                "SKIPPED: node is not available ({error}); the differential test did not run"
            );
            return None;
        }
    };
    let input = serde_json::to_string(texts).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "node failed");
    Some(serde_json::from_slice(&output.stdout).expect("node's answers"))
}

#[test]
fn canonical_payload_strings_match_node_byte_for_byte() {
    let cases: usize = std::env::var("OFC_SIGNER_DIFF_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("OFC_SIGNER_DIFF_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x0fc5_1693);
    let mut rng = Rng(seed | 1);
    let texts: Vec<String> = (0..cases).map(|_| text(&mut rng)).collect();
    let Some(expected) = node_canonical(&texts) else {
        return;
    };
    assert_eq!(expected.len(), texts.len());
    let mut accepted = 0;
    for (text, node) in texts.iter().zip(&expected) {
        let ours = js_json::parse(text).ok().map(|value| value.to_json());
        assert_eq!(&ours, node, "text {text:?} (seed {seed})");
        accepted += usize::from(ours.is_some());
    }
    // The generator mostly makes valid JSON: a run that compared only refusals proves little.
    assert!(accepted > cases / 2, "{accepted} of {cases} texts parsed");
}
