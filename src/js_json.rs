//! Byte-exact emulation of Node.js 20 (V8 11.3) `JSON.stringify(JSON.parse(text))`,
//! plus a small JS value model for building Express-style JSON bodies.
//!
//! # What is reproduced
//!
//! **Parsing** ([`parse`], `JSON.parse`): strict RFC 8259 grammar exactly as V8 accepts
//! it (whitespace is only space, `\t`, `\n`, `\r`; no leading zeros, no `+`, no `.5`,
//! no `1.`; raw U+0000..U+001F inside strings is an error; every other code point is
//! allowed raw). Numbers become correctly rounded IEEE-754 doubles (overflow gives
//! ±Infinity, underflow ±0). Errors carry the same message text as Node 20's
//! `SyntaxError` (positions in messages are UTF-16 code-unit offsets, like V8).
//!
//! **Object key order** (V8 `OwnPropertyKeys`): keys that are *array indices* (the
//! canonical decimal form of an integer in `0..=4294967294`: no sign, no leading
//! zeros except `"0"` itself) come first in ascending numeric order, followed by all
//! other keys in order of first insertion. With duplicate keys in `JSON.parse` input
//! the last value wins but the key keeps the position of its first occurrence.
//! `__proto__`, `constructor` etc. are ordinary own keys (JSON.parse uses
//! CreateDataProperty, so there is no prototype magic).
//!
//! **Serialising** ([`JsValue::to_json`], compact `JSON.stringify`): no whitespace;
//! numbers via ECMAScript `Number::toString` (non-finite → `null`, `-0` → `0`);
//! strings escape `"`, `\`, `\b \t \n \f \r`, other C0 controls as `\u00xx` and lone
//! surrogates as `\udxxx` (lowercase hex, "well-formed JSON.stringify"); everything
//! else (including `/`, U+007F, C1 controls, U+2028/U+2029, astral characters) is
//! emitted raw as UTF-8.
//!
//! **Body decoding** ([`parse_body`], Express `body-parser` json in strict mode):
//! UTF-8 decoding with U+FFFD replacement (maximal-subpart rule, as Node's decoder),
//! one leading BOM stripped, an empty body is `{}`, the first non-whitespace
//! character must be `{` or `[` (otherwise body-parser's strict-violation message).
//!
//! # Strings: the WTF-8 representation
//!
//! JS strings are sequences of UTF-16 code units and may contain *lone* surrogates
//! (e.g. from `"\ud800"`). [`JsString`] stores them as WTF-8: ordinary UTF-8, where an
//! escaped surrogate *pair* is always combined into one 4-byte astral character and a
//! lone surrogate is encoded as the 3-byte sequence `ED A0 80..ED BF BF`. Because pairs
//! are always combined the encoding is canonical, so byte equality is JS string
//! equality. Strings without lone surrogates (the overwhelmingly common case) are
//! stored as a plain `String`, so [`JsString::as_str`] is O(1).
//!
//! # Robustness
//!
//! The parser is iterative (explicit stack, no recursion) and limits nesting to
//! [`MAX_DEPTH`] levels (a deliberate deviation: V8 has no fixed limit). Large objects
//! get a hash index for duplicate detection and lookup, so parsing is linear in the
//! input size. Serialisation is iterative as well. Nothing here panics on any input.

use std::borrow::{Borrow, Cow};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};

/// Maximum nesting depth of arrays/objects accepted by [`parse`] and [`parse_body`].
pub const MAX_DEPTH: usize = 4096;

/// Objects with more entries than this get a hash index; smaller ones use a linear scan.
const LINEAR_MAX: usize = 16;

/// Number of context characters V8 shows on each side in "Unexpected token" messages.
const CONTEXT_CHARS: usize = 10;

// ---------------------------------------------------------------------------
// JsString
// ---------------------------------------------------------------------------

#[derive(Clone)]
enum Repr {
    /// Well-formed UTF-16 content (no lone surrogates).
    Utf8(String),
    /// Contains at least one lone surrogate; WTF-8 bytes.
    Wtf8(Box<[u8]>),
}

/// A JS string stored as WTF-8: UTF-8, where surrogate pairs are combined into 4-byte
/// sequences and lone surrogates are encoded as 3-byte sequences `ED A0 80..ED BF BF`.
///
/// Equality and hashing are on the (canonical) WTF-8 bytes, i.e. JS string equality.
#[derive(Clone)]
pub struct JsString(Repr);

impl JsString {
    /// A JS string with the same characters as `s`.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(s: &str) -> JsString {
        JsString(Repr::Utf8(s.to_owned()))
    }

    /// Builds a JS string from UTF-16 code units (pairs are combined, lone surrogates kept).
    pub fn from_utf16(units: &[u16]) -> JsString {
        let mut buf = Vec::with_capacity(units.len());
        let mut lone = false;
        for r in char::decode_utf16(units.iter().copied()) {
            match r {
                Ok(c) => push_char(&mut buf, c),
                Err(e) => {
                    push_surrogate(&mut buf, e.unpaired_surrogate());
                    lone = true;
                }
            }
        }
        JsString::from_wtf8_vec(buf, lone)
    }

    /// Wraps decoder output; `lone` says whether a lone surrogate was written.
    fn from_wtf8_vec(buf: Vec<u8>, lone: bool) -> JsString {
        if lone {
            return JsString(Repr::Wtf8(buf.into_boxed_slice()));
        }
        match String::from_utf8(buf) {
            Ok(s) => JsString(Repr::Utf8(s)),
            // Unreachable: without lone surrogates the buffer is valid UTF-8.
            Err(e) => JsString(Repr::Wtf8(e.into_bytes().into_boxed_slice())),
        }
    }

    /// The string as `&str`; `None` iff it holds a lone surrogate.
    pub fn as_str(&self) -> Option<&str> {
        match &self.0 {
            Repr::Utf8(s) => Some(s),
            Repr::Wtf8(_) => None,
        }
    }

    /// The WTF-8 bytes (identical to the UTF-8 bytes when there is no lone surrogate).
    pub fn as_wtf8_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Utf8(s) => s.as_bytes(),
            Repr::Wtf8(b) => b,
        }
    }

    /// UTF-8 with every lone surrogate replaced by U+FFFD (`EF BF BD`), exactly like
    /// `Buffer.from(s, 'utf8')` in Node.
    pub fn to_utf8_lossy(&self) -> Cow<'_, str> {
        match &self.0 {
            Repr::Utf8(s) => Cow::Borrowed(s),
            Repr::Wtf8(b) => {
                let mut out = String::with_capacity(b.len());
                for_each_wtf8_chunk(b, |chunk| match chunk {
                    Wtf8Chunk::Str(s) => out.push_str(s),
                    Wtf8Chunk::Surrogate(_) => out.push('\u{FFFD}'),
                });
                Cow::Owned(out)
            }
        }
    }

    /// `true` for the empty string.
    pub fn is_empty(&self) -> bool {
        self.as_wtf8_bytes().is_empty()
    }

    /// `true` if the string contains an unpaired surrogate code unit.
    pub fn has_lone_surrogate(&self) -> bool {
        matches!(self.0, Repr::Wtf8(_))
    }

    /// JS `s.length`: the number of UTF-16 code units.
    pub fn len_utf16(&self) -> usize {
        // Every UTF-8/WTF-8 sequence is one code unit, except 4-byte ones (two).
        self.as_wtf8_bytes()
            .iter()
            .map(|&b| usize::from(b & 0xC0 != 0x80) + usize::from(b >= 0xF0))
            .sum()
    }

    /// Appends `JSON.stringify(self)` (quotes included) to `out`.
    pub fn write_json(&self, out: &mut String) {
        match &self.0 {
            Repr::Utf8(s) => write_json_str(out, s),
            Repr::Wtf8(b) => {
                out.reserve(b.len() + 2);
                out.push('"');
                for_each_wtf8_chunk(b, |chunk| match chunk {
                    Wtf8Chunk::Str(s) => write_escaped(out, s),
                    Wtf8Chunk::Surrogate(u) => push_u_escape(out, u),
                });
                out.push('"');
            }
        }
    }
}

impl Default for JsString {
    fn default() -> Self {
        JsString(Repr::Utf8(String::new()))
    }
}

impl PartialEq for JsString {
    fn eq(&self, other: &Self) -> bool {
        self.as_wtf8_bytes() == other.as_wtf8_bytes()
    }
}
impl Eq for JsString {}

impl Hash for JsString {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must match `<[u8] as Hash>` because of the `Borrow<[u8]>` impl.
        self.as_wtf8_bytes().hash(state);
    }
}

impl Borrow<[u8]> for JsString {
    fn borrow(&self) -> &[u8] {
        self.as_wtf8_bytes()
    }
}

impl PartialEq<str> for JsString {
    fn eq(&self, other: &str) -> bool {
        self.as_wtf8_bytes() == other.as_bytes()
    }
}
impl PartialEq<&str> for JsString {
    fn eq(&self, other: &&str) -> bool {
        self.as_wtf8_bytes() == other.as_bytes()
    }
}

impl From<&str> for JsString {
    fn from(s: &str) -> Self {
        JsString::from_str(s)
    }
}
impl From<String> for JsString {
    fn from(s: String) -> Self {
        JsString(Repr::Utf8(s))
    }
}
impl From<&String> for JsString {
    fn from(s: &String) -> Self {
        JsString::from_str(s)
    }
}
impl From<&JsString> for JsString {
    fn from(s: &JsString) -> Self {
        s.clone()
    }
}

impl fmt::Debug for JsString {
    /// Like Rust's `str` Debug; lone surrogates are shown as `\u{d800}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        f.write_char('"')?;
        let mut res = Ok(());
        for_each_wtf8_chunk(self.as_wtf8_bytes(), |chunk| {
            if res.is_ok() {
                res = match chunk {
                    Wtf8Chunk::Str(s) => write!(f, "{}", s.escape_debug()),
                    Wtf8Chunk::Surrogate(u) => write!(f, "\\u{{{u:x}}}"),
                };
            }
        });
        res?;
        f.write_char('"')
    }
}

impl fmt::Display for JsString {
    /// Lossy: lone surrogates are shown as U+FFFD.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_utf8_lossy())
    }
}

enum Wtf8Chunk<'a> {
    Str(&'a str),
    Surrogate(u16),
}

/// Splits WTF-8 bytes into maximal valid-UTF-8 runs and lone surrogates.
fn for_each_wtf8_chunk(bytes: &[u8], mut f: impl FnMut(Wtf8Chunk<'_>)) {
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        // 0xED is always a lead byte; ED A0..BF xx is a surrogate (never valid UTF-8).
        if b == 0xED
            && let (Some(&b1), Some(&b2)) = (bytes.get(i + 1), bytes.get(i + 2))
            && b1 >= 0xA0
        {
            emit_str(bytes.get(start..i).unwrap_or_default(), &mut f);
            let u = 0xD000 | (u16::from(b1 & 0x3F) << 6) | u16::from(b2 & 0x3F);
            f(Wtf8Chunk::Surrogate(u));
            i += 3;
            start = i;
            continue;
        }
        i += 1;
    }
    emit_str(bytes.get(start..).unwrap_or_default(), &mut f);
}

fn emit_str(seg: &[u8], f: &mut impl FnMut(Wtf8Chunk<'_>)) {
    if !seg.is_empty() {
        // Borrowed (no copy) for valid UTF-8, which the WTF-8 invariant guarantees.
        let s = String::from_utf8_lossy(seg);
        f(Wtf8Chunk::Str(&s));
    }
}

fn push_char(buf: &mut Vec<u8>, c: char) {
    let mut tmp = [0u8; 4];
    buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
}

/// WTF-8 encoding of a surrogate code unit (D800..DFFF) as a generalized 3-byte sequence.
fn push_surrogate(buf: &mut Vec<u8>, u: u16) {
    buf.extend_from_slice(&[
        0xE0 | (u >> 12) as u8,
        0x80 | ((u >> 6) & 0x3F) as u8,
        0x80 | (u & 0x3F) as u8,
    ]);
}

// ---------------------------------------------------------------------------
// JsValue
// ---------------------------------------------------------------------------

/// A JSON-compatible JS value.
#[derive(Clone, Debug, PartialEq)]
pub enum JsValue {
    Null,
    Bool(bool),
    Number(f64),
    String(JsString),
    Array(Vec<JsValue>),
    Object(JsObject),
}

impl JsValue {
    /// `JSON.stringify(value)` (compact).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(128);
        self.write_json(&mut out);
        out
    }

    /// Appends `JSON.stringify(value)` to `out`. Iterative: no recursion, any depth.
    pub fn write_json(&self, out: &mut String) {
        enum Frame<'a> {
            Arr(std::slice::Iter<'a, JsValue>),
            Obj(std::slice::Iter<'a, (JsString, JsValue)>),
        }
        let mut stack: Vec<Frame<'_>> = Vec::new();
        let mut cur = self;
        loop {
            // Write `cur`; containers with content push a frame and descend.
            match cur {
                JsValue::Null => out.push_str("null"),
                JsValue::Bool(true) => out.push_str("true"),
                JsValue::Bool(false) => out.push_str("false"),
                JsValue::Number(n) => {
                    if n.is_finite() {
                        push_number(out, *n);
                    } else {
                        out.push_str("null");
                    }
                }
                JsValue::String(s) => s.write_json(out),
                JsValue::Array(items) => {
                    out.push('[');
                    let mut it = items.iter();
                    if let Some(first) = it.next() {
                        stack.push(Frame::Arr(it));
                        cur = first;
                        continue;
                    }
                    out.push(']');
                }
                JsValue::Object(obj) => {
                    out.push('{');
                    let mut it = obj.entries.iter();
                    if let Some((k, v)) = it.next() {
                        k.write_json(out);
                        out.push(':');
                        stack.push(Frame::Obj(it));
                        cur = v;
                        continue;
                    }
                    out.push('}');
                }
            }
            // `cur` is complete: move to the next sibling, closing finished containers.
            loop {
                match stack.last_mut() {
                    None => return,
                    Some(Frame::Arr(it)) => {
                        if let Some(v) = it.next() {
                            out.push(',');
                            cur = v;
                            break;
                        }
                        out.push(']');
                    }
                    Some(Frame::Obj(it)) => {
                        if let Some((k, v)) = it.next() {
                            out.push(',');
                            k.write_json(out);
                            out.push(':');
                            cur = v;
                            break;
                        }
                        out.push('}');
                    }
                }
                stack.pop();
            }
        }
    }

    /// JS `ToBoolean`: false for `false`, `null`, `0`, `-0`, `NaN` and `""`.
    pub fn is_truthy(&self) -> bool {
        match self {
            JsValue::Null => false,
            JsValue::Bool(b) => *b,
            JsValue::Number(n) => !(*n == 0.0 || n.is_nan()),
            JsValue::String(s) => !s.is_empty(),
            JsValue::Array(_) | JsValue::Object(_) => true,
        }
    }

    /// Object member lookup; `None` for non-objects and missing keys.
    pub fn get(&self, key: &str) -> Option<&JsValue> {
        self.as_object().and_then(|o| o.get(key))
    }

    /// `Some` for string values without lone surrogates.
    pub fn as_str(&self) -> Option<&str> {
        self.as_js_string().and_then(JsString::as_str)
    }

    pub fn as_js_string(&self) -> Option<&JsString> {
        match self {
            JsValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            JsValue::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            JsValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, JsValue::Null)
    }

    pub fn as_object(&self) -> Option<&JsObject> {
        match self {
            JsValue::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut JsObject> {
        match self {
            JsValue::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[JsValue]> {
        match self {
            JsValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// JS `typeof`: `"object"` for null/arrays/objects.
    pub fn type_of(&self) -> &'static str {
        match self {
            JsValue::Null | JsValue::Array(_) | JsValue::Object(_) => "object",
            JsValue::Bool(_) => "boolean",
            JsValue::Number(_) => "number",
            JsValue::String(_) => "string",
        }
    }
}

impl From<&str> for JsValue {
    fn from(s: &str) -> Self {
        JsValue::String(JsString::from_str(s))
    }
}
impl From<String> for JsValue {
    fn from(s: String) -> Self {
        JsValue::String(JsString::from(s))
    }
}
impl From<JsString> for JsValue {
    fn from(s: JsString) -> Self {
        JsValue::String(s)
    }
}
impl From<f64> for JsValue {
    fn from(n: f64) -> Self {
        JsValue::Number(n)
    }
}
impl From<i32> for JsValue {
    fn from(n: i32) -> Self {
        JsValue::Number(f64::from(n))
    }
}
impl From<u32> for JsValue {
    fn from(n: u32) -> Self {
        JsValue::Number(f64::from(n))
    }
}
impl From<bool> for JsValue {
    fn from(b: bool) -> Self {
        JsValue::Bool(b)
    }
}
impl From<JsObject> for JsValue {
    fn from(o: JsObject) -> Self {
        JsValue::Object(o)
    }
}
impl From<Vec<JsValue>> for JsValue {
    fn from(v: Vec<JsValue>) -> Self {
        JsValue::Array(v)
    }
}

// ---------------------------------------------------------------------------
// JsObject
// ---------------------------------------------------------------------------

type Entry = (JsString, JsValue);

/// A plain JS object (own enumerable data properties only), kept in V8 enumeration
/// order: array-index keys ascending, then the other keys in insertion order.
#[derive(Clone, Default)]
pub struct JsObject {
    /// Entries in V8 enumeration order (see module docs). While an object is being
    /// built by the parser, entries are in plain insertion order until
    /// `finish_parsed` runs.
    entries: Vec<Entry>,
    /// Number of leading entries whose keys are array indices.
    n_index: usize,
    /// Hash index, present only for objects with more than `LINEAR_MAX` entries.
    /// Boxed to keep `JsObject` (and so every `JsValue`) small.
    index: Option<Box<KeyIndex>>,
}

/// Hash index over `JsObject::entries` for large objects.
///
/// Each key is hashed once with SipHash under a per-index random key (`RandomState`,
/// so adversarial inputs cannot force collisions). `heads` maps that 64-bit hash to the
/// most recent position with that hash; positions with equal hashes (genuine 64-bit
/// collisions, practically never) are chained through `next`. Storing hashes instead of
/// key copies means no extra allocation per key and no re-hashing of keys on growth.
#[derive(Clone)]
struct KeyIndex {
    state: RandomState,
    heads: HashMap<u64, usize, BuildHasherDefault<PassThroughHasher>>,
    /// Parallel to `entries`: the next older position with the same hash, or `NO_POS`.
    next: Vec<usize>,
}

const NO_POS: usize = usize::MAX;

/// Hasher for keys that already are random-keyed SipHash values.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for `u64` keys; fold anyway so the impl is total.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl KeyIndex {
    fn build(entries: &[Entry]) -> KeyIndex {
        let mut idx = KeyIndex {
            state: RandomState::new(),
            heads: HashMap::with_capacity_and_hasher(entries.len() * 2, Default::default()),
            next: Vec::with_capacity(entries.len() * 2),
        };
        for (k, _) in entries {
            let h = idx.hash(k.as_wtf8_bytes());
            idx.push(h);
        }
        idx
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.state.hash_one(key)
    }

    /// Position of `key` (with hash `h`) in `entries`.
    fn find(&self, entries: &[Entry], key: &[u8], h: u64) -> Option<usize> {
        let mut p = *self.heads.get(&h)?;
        while let Some((k, _)) = entries.get(p) {
            if k.as_wtf8_bytes() == key {
                return Some(p);
            }
            p = self.next.get(p).copied().unwrap_or(NO_POS);
        }
        None
    }

    /// Registers the entry appended at position `self.next.len()`.
    fn push(&mut self, h: u64) {
        let pos = self.next.len();
        let prev = self.heads.insert(h, pos).unwrap_or(NO_POS);
        self.next.push(prev);
    }
}

impl JsObject {
    pub fn new() -> Self {
        JsObject::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        match &self.index {
            Some(idx) => idx.find(&self.entries, key, idx.hash(key)),
            None => self
                .entries
                .iter()
                .position(|(k, _)| k.as_wtf8_bytes() == key),
        }
    }

    pub fn get(&self, key: &str) -> Option<&JsValue> {
        self.get_js(key.as_bytes())
    }

    /// Lookup by WTF-8 key bytes (e.g. `JsString::as_wtf8_bytes`).
    pub fn get_js(&self, key: &[u8]) -> Option<&JsValue> {
        let i = self.find(key)?;
        self.entries.get(i).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut JsValue> {
        let i = self.find(key.as_bytes())?;
        self.entries.get_mut(i).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key.as_bytes()).is_some()
    }

    /// JS assignment / CreateDataProperty: an existing key keeps its position and gets
    /// the new value; a new array-index key goes into ascending numeric order among the
    /// index keys (which precede all others); any other new key is appended.
    pub fn insert(&mut self, key: impl Into<JsString>, value: impl Into<JsValue>) {
        let key = key.into();
        let value = value.into();
        if let Some(i) = self.find(key.as_wtf8_bytes()) {
            if let Some(slot) = self.entries.get_mut(i) {
                slot.1 = value;
            }
            return;
        }
        if is_array_index(key.as_wtf8_bytes()) {
            let kb = key.as_wtf8_bytes();
            let pos = self
                .entries
                .get(..self.n_index)
                .unwrap_or_default()
                .partition_point(|(k, _)| index_key_cmp(k.as_wtf8_bytes(), kb).is_lt());
            self.entries.insert(pos, (key, value));
            self.n_index += 1;
            // Later positions shifted: O(n) like the Vec insert itself.
            self.index = None;
        } else {
            if let Some(idx) = &mut self.index {
                idx.push(idx.hash(key.as_wtf8_bytes()));
            }
            self.entries.push((key, value));
        }
        self.maybe_build_index();
    }

    /// Like `delete obj[key]`: removes the property, keeping the others' order.
    pub fn remove(&mut self, key: &str) -> Option<JsValue> {
        let i = self.find(key.as_bytes())?;
        if i >= self.entries.len() {
            return None;
        }
        let (_, value) = self.entries.remove(i);
        if i < self.n_index {
            self.n_index -= 1;
        }
        // Later positions shifted: rebuild (O(n), like the Vec remove itself).
        self.index = None;
        self.maybe_build_index();
        Some(value)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&JsString, &JsValue)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &JsString> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &JsValue> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Entries in enumeration order with mutable values (keys cannot change, so the order and
    /// the hash index stay valid).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&JsString, &mut JsValue)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    fn maybe_build_index(&mut self) {
        if self.index.is_none() && self.entries.len() > LINEAR_MAX {
            self.index = Some(Box::new(KeyIndex::build(&self.entries)));
        }
    }

    /// Parser helper: insertion-order add with JSON.parse duplicate semantics (last value
    /// wins, first position kept). Returns whether a new array-index key was added.
    fn push_parsed(&mut self, key: JsString, value: JsValue) -> bool {
        let kb = key.as_wtf8_bytes();
        let found = if let Some(idx) = self.index.as_deref_mut() {
            // Large object: hash the key once for both the lookup and the insertion.
            let h = idx.hash(kb);
            let found = idx.find(&self.entries, kb, h);
            if found.is_none() {
                idx.push(h);
            }
            found
        } else {
            self.entries
                .iter()
                .position(|(k, _)| k.as_wtf8_bytes() == kb)
        };
        if let Some(i) = found {
            if let Some(slot) = self.entries.get_mut(i) {
                slot.1 = value;
            }
            return false;
        }
        let is_idx = is_array_index(kb);
        self.entries.push((key, value));
        self.maybe_build_index();
        is_idx
    }

    /// Parser helper: moves array-index keys to the front in ascending numeric order.
    fn finish_parsed(&mut self, has_index_keys: bool) {
        if !has_index_keys {
            return;
        }
        let all = std::mem::take(&mut self.entries);
        let mut idx = Vec::new();
        let mut rest = Vec::with_capacity(all.len());
        for e in all {
            if is_array_index(e.0.as_wtf8_bytes()) {
                idx.push(e);
            } else {
                rest.push(e);
            }
        }
        idx.sort_unstable_by(|a, b| index_key_cmp(a.0.as_wtf8_bytes(), b.0.as_wtf8_bytes()));
        self.n_index = idx.len();
        idx.append(&mut rest);
        self.entries = idx;
        if self.index.is_some() {
            self.index = None;
            self.maybe_build_index();
        }
    }
}

impl PartialEq for JsObject {
    /// Same keys with equal values in the same enumeration order.
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl fmt::Debug for JsObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<JsString>, V: Into<JsValue>> FromIterator<(K, V)> for JsObject {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut o = JsObject::new();
        for (k, v) in iter {
            o.insert(k, v);
        }
        o
    }
}

/// An ECMAScript "array index": canonical decimal of an integer in 0..=4294967294.
fn is_array_index(k: &[u8]) -> bool {
    match k {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        _ if k.len() > 10 => false,
        _ => {
            let mut v: u64 = 0;
            for &c in k {
                if !c.is_ascii_digit() {
                    return false;
                }
                v = v * 10 + u64::from(c - b'0');
            }
            v <= 4_294_967_294
        }
    }
}

/// Numeric order of two canonical decimal strings: shorter is smaller, else lexicographic.
fn index_key_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A JSON syntax error. `message` follows Node 20's `SyntaxError` text (positions in
/// the message are UTF-16 code-unit offsets, as in V8); `position` is the byte offset
/// in the parsed text (for [`parse_body`]: in the decoded text after BOM removal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    pub message: String,
    pub position: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JsonError {}

#[derive(Clone, Copy)]
enum ErrKind {
    /// V8 `ReportUnexpectedToken` without a specific message (classified by the char).
    Unexpected,
    NonWhitespaceAfter,
    PropNameOrRBrace,
    DoubleQuotedPropName,
    ColonAfterPropName,
    CommaOrRBrace,
    CommaOrRBrack,
    BadControl,
    BadEscape,
    BadUnicode,
    Unterminated,
    NoNumberAfterMinus,
    ExponentMissing,
    UnterminatedFraction,
    TooDeep,
}

fn make_error(src: &str, kind: ErrKind, pos: usize) -> JsonError {
    let at = |what: &str| format!("{what} in JSON at position {}", utf16_index(src, pos));
    let message = match kind {
        ErrKind::Unexpected => match src.as_bytes().get(pos) {
            None => "Unexpected end of JSON input".to_owned(),
            Some(b'"') => at("Unexpected string"),
            Some(b'-' | b'0'..=b'9') => at("Unexpected number"),
            Some(_) => {
                if matches!(src, "NaN" | "Infinity" | "undefined" | "[object Object]") {
                    format!("\"{src}\" is not valid JSON")
                } else {
                    unexpected_token_message(src, pos)
                }
            }
        },
        ErrKind::NonWhitespaceAfter => format!(
            "Unexpected non-whitespace character after JSON at position {}",
            utf16_index(src, pos)
        ),
        ErrKind::PropNameOrRBrace => at("Expected property name or '}'"),
        ErrKind::DoubleQuotedPropName => at("Expected double-quoted property name"),
        ErrKind::ColonAfterPropName => at("Expected ':' after property name"),
        ErrKind::CommaOrRBrace => at("Expected ',' or '}' after property value"),
        ErrKind::CommaOrRBrack => at("Expected ',' or ']' after array element"),
        ErrKind::BadControl => at("Bad control character in string literal"),
        ErrKind::BadEscape => at("Bad escaped character"),
        ErrKind::BadUnicode => at("Bad Unicode escape"),
        ErrKind::Unterminated => at("Unterminated string"),
        ErrKind::NoNumberAfterMinus => at("No number after minus sign"),
        ErrKind::ExponentMissing => at("Exponent part is missing a number"),
        ErrKind::UnterminatedFraction => at("Unterminated fractional number"),
        ErrKind::TooDeep => format!("JSON nesting exceeds {MAX_DEPTH} levels"),
    };
    JsonError {
        message,
        position: pos,
    }
}

/// V8's "Unexpected token 'c', <context> is not valid JSON" for the char at byte `pos`.
fn unexpected_token_message(src: &str, pos: usize) -> String {
    // V8 shows one UTF-16 code unit; half of an astral char becomes U+FFFD on the wire.
    let tok = match src.get(pos..).and_then(|s| s.chars().next()) {
        Some(c) if (c as u32) < 0x10000 => c,
        _ => '\u{FFFD}',
    };
    let len16 = utf16_index(src, src.len());
    let pos16 = utf16_index(src, pos);
    let k = CONTEXT_CHARS;
    let (pre, ctx, post) = if len16 <= 2 * k {
        ("", utf16_slice_lossy(src, 0, len16), "")
    } else if pos16 < k {
        ("", utf16_slice_lossy(src, 0, pos16 + k), "...")
    } else if pos16 + k < len16 {
        ("...", utf16_slice_lossy(src, pos16 - k, pos16 + k), "...")
    } else {
        ("...", utf16_slice_lossy(src, pos16 - k, len16), "")
    };
    format!("Unexpected token '{tok}', {pre}\"{ctx}\"{post} is not valid JSON")
}

/// UTF-16 code-unit offset of byte offset `byte_pos` in `s`.
fn utf16_index(s: &str, byte_pos: usize) -> usize {
    let bytes = s.as_bytes();
    bytes
        .get(..byte_pos)
        .unwrap_or(bytes)
        .iter()
        .map(|&b| usize::from(b & 0xC0 != 0x80) + usize::from(b >= 0xF0))
        .sum()
}

/// `s.substring(start, end)` in UTF-16 units; a split surrogate pair becomes U+FFFD.
fn utf16_slice_lossy(s: &str, start: usize, end: usize) -> String {
    let mut out = String::new();
    let mut u = 0;
    for c in s.chars() {
        if u >= end {
            break;
        }
        let n = c.len_utf16();
        if u >= start && u + n <= end {
            out.push(c);
        } else if u + n > start {
            out.push('\u{FFFD}');
        }
        u += n;
    }
    out
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

/// `JSON.parse(text)` (no reviver), with a nesting limit of [`MAX_DEPTH`].
pub fn parse(text: &str) -> Result<JsValue, JsonError> {
    Parser {
        src: text,
        b: text.as_bytes(),
        pos: 0,
    }
    .parse_document()
}

/// Express `body-parser` json (strict mode) on raw request bytes: lossy UTF-8 decode,
/// strip one BOM, empty → `{}`, first non-whitespace char must be `{` or `[`.
pub fn parse_body(bytes: &[u8]) -> Result<JsValue, JsonError> {
    let text = String::from_utf8_lossy(bytes);
    let s: &str = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    if s.is_empty() {
        return Ok(JsValue::Object(JsObject::new()));
    }
    match s.bytes().position(|c| !is_ws(c)) {
        // body-parser: JSON.parse('') on the whitespace-only body.
        None => Err(JsonError {
            message: "Unexpected end of JSON input".to_owned(),
            position: s.len(),
        }),
        Some(i) => match s.as_bytes().get(i) {
            Some(b'{' | b'[') => parse(s),
            // body-parser parses `ws + "###…"` and substitutes the original text back
            // into the message, which equals V8's generic message at `i` for `s`.
            _ => Err(JsonError {
                message: unexpected_token_message(s, i),
                position: i,
            }),
        },
    }
}

#[inline]
fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

enum Frame {
    Array(Vec<JsValue>),
    Object {
        obj: JsObject,
        /// Key whose value is being parsed.
        key: JsString,
        has_index_keys: bool,
    },
}

struct Parser<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, kind: ErrKind, pos: usize) -> JsonError {
        make_error(self.src, kind, pos)
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if !is_ws(c) {
                break;
            }
            self.pos += 1;
        }
    }

    fn parse_document(&mut self) -> Result<JsValue, JsonError> {
        let mut stack: Vec<Frame> = Vec::new();
        'value: loop {
            // Parse one value; opening a non-empty container pushes a frame and
            // restarts the loop for its first element.
            self.skip_ws();
            let mut value = match self.peek() {
                Some(b'"') => JsValue::String(self.parse_string()?),
                Some(b'-' | b'0'..=b'9') => JsValue::Number(self.parse_number()?),
                Some(b'{') => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(self.err(ErrKind::TooDeep, self.pos));
                    }
                    self.pos += 1;
                    self.skip_ws();
                    match self.peek() {
                        Some(b'}') => {
                            self.pos += 1;
                            JsValue::Object(JsObject::new())
                        }
                        Some(b'"') => {
                            let key = self.parse_key(true)?;
                            stack.push(Frame::Object {
                                obj: JsObject::new(),
                                key,
                                has_index_keys: false,
                            });
                            continue 'value;
                        }
                        _ => return Err(self.err(ErrKind::PropNameOrRBrace, self.pos)),
                    }
                }
                Some(b'[') => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(self.err(ErrKind::TooDeep, self.pos));
                    }
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        JsValue::Array(Vec::new())
                    } else {
                        stack.push(Frame::Array(Vec::new()));
                        continue 'value;
                    }
                }
                Some(b't') => {
                    self.literal(b"true")?;
                    JsValue::Bool(true)
                }
                Some(b'f') => {
                    self.literal(b"false")?;
                    JsValue::Bool(false)
                }
                Some(b'n') => {
                    self.literal(b"null")?;
                    JsValue::Null
                }
                _ => return Err(self.err(ErrKind::Unexpected, self.pos)),
            };

            // `value` is complete: attach it to its parent, closing containers as needed.
            loop {
                let Some(frame) = stack.last_mut() else {
                    self.skip_ws();
                    if self.pos < self.b.len() {
                        return Err(self.err(ErrKind::NonWhitespaceAfter, self.pos));
                    }
                    return Ok(value);
                };
                match frame {
                    Frame::Array(items) => {
                        items.push(value);
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                continue 'value;
                            }
                            Some(b']') => {
                                self.pos += 1;
                                value = JsValue::Array(std::mem::take(items));
                            }
                            _ => return Err(self.err(ErrKind::CommaOrRBrack, self.pos)),
                        }
                    }
                    Frame::Object {
                        obj,
                        key,
                        has_index_keys,
                    } => {
                        *has_index_keys |= obj.push_parsed(std::mem::take(key), value);
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                self.skip_ws();
                                if self.peek() != Some(b'"') {
                                    return Err(self.err(ErrKind::DoubleQuotedPropName, self.pos));
                                }
                                *key = self.parse_key(false)?;
                                continue 'value;
                            }
                            Some(b'}') => {
                                self.pos += 1;
                                let mut done = std::mem::take(obj);
                                done.finish_parsed(*has_index_keys);
                                value = JsValue::Object(done);
                            }
                            _ => return Err(self.err(ErrKind::CommaOrRBrace, self.pos)),
                        }
                    }
                }
                stack.pop();
            }
        }
    }

    /// Parses `"key"` and the following `:`. V8 reports a missing colon with
    /// "Expected ':' after property name" only for the first key of an object; after a
    /// comma it uses the generic unexpected-token message.
    fn parse_key(&mut self, first: bool) -> Result<JsString, JsonError> {
        let key = self.parse_string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            let kind = if first {
                ErrKind::ColonAfterPropName
            } else {
                ErrKind::Unexpected
            };
            return Err(self.err(kind, self.pos));
        }
        self.pos += 1;
        Ok(key)
    }

    /// Matches the rest of a literal whose first byte is already known to match.
    fn literal(&mut self, lit: &[u8]) -> Result<(), JsonError> {
        for (k, &c) in lit.iter().enumerate().skip(1) {
            if self.b.get(self.pos + k) != Some(&c) {
                // At the end → "Unexpected end"; otherwise V8 reports the mismatching char.
                return Err(self.err(ErrKind::Unexpected, self.pos + k));
            }
        }
        self.pos += lit.len();
        Ok(())
    }

    fn parse_number(&mut self) -> Result<f64, JsonError> {
        let b = self.b;
        let start = self.pos;
        let mut i = start;
        let neg = b.get(i) == Some(&b'-');
        if neg {
            i += 1;
        }
        let int_start = i;
        match b.get(i) {
            Some(b'0') => {
                i += 1;
                if is_digit(b.get(i)) {
                    // V8: "Unexpected number" at the digit after the leading zero.
                    return Err(self.err(ErrKind::Unexpected, i));
                }
            }
            Some(b'1'..=b'9') => {
                i += 1;
                while is_digit(b.get(i)) {
                    i += 1;
                }
            }
            _ => return Err(self.err(ErrKind::NoNumberAfterMinus, i)),
        }
        let int_end = i;
        let mut simple = true;
        if b.get(i) == Some(&b'.') {
            simple = false;
            i += 1;
            if !is_digit(b.get(i)) {
                return Err(self.err(ErrKind::UnterminatedFraction, i));
            }
            while is_digit(b.get(i)) {
                i += 1;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            simple = false;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !is_digit(b.get(i)) {
                return Err(self.err(ErrKind::ExponentMissing, i));
            }
            while is_digit(b.get(i)) {
                i += 1;
            }
        }
        self.pos = i;
        if simple && int_end - int_start <= 15 {
            // Fast path: integers below 10^15 are exact in f64.
            let mut v: u64 = 0;
            for &d in b.get(int_start..int_end).unwrap_or_default() {
                v = v * 10 + u64::from(d - b'0');
            }
            let f = v as f64;
            return Ok(if neg { -f } else { f });
        }
        // Rust's float parsing is correctly rounded; overflow → ±inf, underflow → ±0.
        self.src
            .get(start..i)
            .and_then(|t| t.parse::<f64>().ok())
            .ok_or_else(|| self.err(ErrKind::Unexpected, start))
    }

    /// Parses a string literal starting at the opening quote.
    fn parse_string(&mut self) -> Result<JsString, JsonError> {
        let start = self.pos + 1;
        let end = scan_plain(self.b, start);
        match self.b.get(end) {
            Some(b'"') => {
                // Fast path: no escapes, one allocation.
                self.pos = end + 1;
                let s = self.src.get(start..end).unwrap_or_default();
                Ok(JsString(Repr::Utf8(s.to_owned())))
            }
            _ => self.parse_string_slow(start, end),
        }
    }

    /// String with escapes (or an error). `i` is the first special byte after `start`.
    fn parse_string_slow(&mut self, start: usize, mut i: usize) -> Result<JsString, JsonError> {
        let b = self.b;
        let mut buf: Vec<u8> = Vec::with_capacity(i - start + 16);
        buf.extend_from_slice(b.get(start..i).unwrap_or_default());
        let mut lone = false;
        loop {
            match b.get(i) {
                None => return Err(self.err(ErrKind::Unterminated, b.len())),
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(JsString::from_wtf8_vec(buf, lone));
                }
                Some(b'\\') => {
                    let Some(&e) = b.get(i + 1) else {
                        return Err(self.err(ErrKind::Unexpected, b.len()));
                    };
                    let simple = match e {
                        b'"' | b'\\' | b'/' => Some(e),
                        b'b' => Some(0x08),
                        b'f' => Some(0x0C),
                        b'n' => Some(b'\n'),
                        b'r' => Some(b'\r'),
                        b't' => Some(b'\t'),
                        b'u' => None,
                        _ => return Err(self.err(ErrKind::BadEscape, i + 1)),
                    };
                    if let Some(c) = simple {
                        buf.push(c);
                        i += 2;
                    } else {
                        let u = hex4(b, i + 2).map_err(|p| self.err(ErrKind::BadUnicode, p))?;
                        i += 6;
                        if (0xD800..0xDC00).contains(&u) {
                            // High surrogate: combine with an immediately following
                            // escaped low surrogate, otherwise it stays lone.
                            let low = match (b.get(i), b.get(i + 1)) {
                                (Some(b'\\'), Some(b'u')) => hex4(b, i + 2)
                                    .ok()
                                    .filter(|lo| (0xDC00..0xE000).contains(lo)),
                                _ => None,
                            };
                            match low.and_then(|lo| {
                                let cp = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                                char::from_u32(cp)
                            }) {
                                Some(c) => {
                                    push_char(&mut buf, c);
                                    i += 6;
                                }
                                None => {
                                    push_surrogate(&mut buf, u as u16);
                                    lone = true;
                                }
                            }
                        } else if (0xDC00..0xE000).contains(&u) {
                            push_surrogate(&mut buf, u as u16);
                            lone = true;
                        } else {
                            push_char(&mut buf, char::from_u32(u).unwrap_or('\u{FFFD}'));
                        }
                    }
                }
                Some(_) => return Err(self.err(ErrKind::BadControl, i)),
            }
            let j = scan_plain(b, i);
            buf.extend_from_slice(b.get(i..j).unwrap_or_default());
            i = j;
        }
    }
}

#[inline]
fn is_digit(c: Option<&u8>) -> bool {
    matches!(c, Some(b'0'..=b'9'))
}

/// Four hex digits at `at`; on failure the offset of the first bad (or missing) one.
fn hex4(b: &[u8], at: usize) -> Result<u32, usize> {
    let mut v = 0u32;
    for k in 0..4 {
        let d = match b.get(at + k) {
            Some(&c) => (c as char).to_digit(16),
            None => None,
        };
        match d {
            Some(d) => v = v * 16 + d,
            None => return Err(at + k),
        }
    }
    Ok(v)
}

/// Index of the first byte at or after `i` that is `"`, `\` or < 0x20 (or `b.len()`).
/// Scans 8 bytes at a time (SWAR); the lowest flagged byte of each test is exact.
#[inline]
fn scan_plain(b: &[u8], mut i: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let Ok(arr) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let v = u64::from_le_bytes(arr);
        let q = v ^ (LO * u64::from(b'"'));
        let s = v ^ (LO * u64::from(b'\\'));
        let m = (q.wrapping_sub(LO) & !q)
            | (s.wrapping_sub(LO) & !s)
            | (v.wrapping_sub(LO * 0x20) & !v);
        let m = m & HI;
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

// ---------------------------------------------------------------------------
// Serialisation helpers
// ---------------------------------------------------------------------------

/// ECMAScript `Number::toString(n)`: `"NaN"`, `"Infinity"`, `"-Infinity"`, `"0"` for -0.
pub fn number_to_string(n: f64) -> String {
    let mut out = String::new();
    push_number(&mut out, n);
    out
}

fn push_number(out: &mut String, n: f64) {
    if n == n.trunc() && n.abs() < 1e15 {
        // Integers: plain decimal digits (also turns -0 into "0").
        let mut v = n as i64;
        if v < 0 {
            out.push('-');
            v = -v;
        }
        let mut buf = [0u8; 20];
        let mut p = buf.len();
        loop {
            p -= 1;
            if let Some(slot) = buf.get_mut(p) {
                *slot = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || p == 0 {
                break;
            }
        }
        for &d in buf.get(p..).unwrap_or_default() {
            out.push(char::from(d));
        }
    } else {
        let mut b = ryu_js::Buffer::new();
        out.push_str(b.format(n));
    }
}

/// Appends `JSON.stringify(s)` (quotes included) for a plain Rust string.
pub fn write_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    write_escaped(out, s);
    out.push('"');
}

/// Escaped string content without quotes, in bulk runs.
fn write_escaped(out: &mut String, s: &str) {
    let b = s.as_bytes();
    let mut start = 0;
    loop {
        let j = scan_plain(b, start);
        // `start` and `j` sit next to ASCII bytes, hence on char boundaries.
        out.push_str(s.get(start..j).unwrap_or_default());
        let Some(&c) = b.get(j) else {
            return;
        };
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            0x0C => out.push_str("\\f"),
            b'\r' => out.push_str("\\r"),
            _ => push_u_escape(out, u16::from(c)),
        }
        start = j + 1;
    }
}

/// `\uXXXX` with lowercase hex.
fn push_u_escape(out: &mut String, u: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\u");
    for shift in [12u16, 8, 4, 0] {
        let d = HEX
            .get(usize::from((u >> shift) & 0xF))
            .copied()
            .unwrap_or(b'0');
        out.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    //! Expected outputs below were produced by Node v20 (`JSON.stringify(JSON.parse(x))`,
    //! the `SyntaxError` message, or body-parser's strict logic), never by this module.
    use super::*;

    /// Real SDK vectors (see the project's `shared/vectors/README.md`).
    const SDK_VECTORS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/sdk-vectors.json"
    );

    const OK_CASES: &[(&str, &str)] = &[
        (
            "{\"z\":1,\"10\":2,\"2\":3,\"-1\":4,\"01\":5,\"4294967295\":6}",
            "{\"2\":3,\"10\":2,\"z\":1,\"-1\":4,\"01\":5,\"4294967295\":6}",
        ),
        ("{\"a\":1,\"b\":2,\"a\":3}", "{\"a\":3,\"b\":2}"),
        (
            "{\"1\":\"a\",\"x\":0,\"1\":\"b\",\"0\":1,\"4294967294\":2,\"4294967295\":3,\"4294967294\":4}",
            "{\"0\":1,\"1\":\"b\",\"4294967294\":4,\"x\":0,\"4294967295\":3}",
        ),
        (
            "{\"b\":1,\"10\":2,\"2\":3,\"a\":4,\"00\":5,\"0\":6,\"1.0\":7,\"+1\":8,\" 1\":9,\"1 \":10,\"99999999999\":11}",
            "{\"0\":6,\"2\":3,\"10\":2,\"b\":1,\"a\":4,\"00\":5,\"1.0\":7,\"+1\":8,\" 1\":9,\"1 \":10,\"99999999999\":11}",
        ),
        (
            "{\"x\":{\"1\":\"first\",\"y\":0,\"1\":\"second\"},\"o\":{\"k\":1},\"o\":{\"j\":2},\"z\":[{\"d\":1,\"d\":{\"e\":2}}]}",
            "{\"x\":{\"1\":\"second\",\"y\":0},\"o\":{\"j\":2},\"z\":[{\"d\":{\"e\":2}}]}",
        ),
        (
            "[1.0,-0,1e21,1e-7,0.000001,12345678901234567890,5e-324,1e400,-1e400,1e-400,-0.0,0e10,1.7976931348623157e308,2.2250738585072014e-308]",
            "[1,0,1e+21,1e-7,0.000001,12345678901234567000,5e-324,null,null,0,0,0,1.7976931348623157e+308,2.2250738585072014e-308]",
        ),
        (
            "[1e999999999999999999999,-1e-99999999999999,123e-20,0.1,100,1e20,-5e-7,4.35,0.30000000000000004,9007199254740993,1E+2,2e-7,1.5e300,999999999999999,1000000000000000,-999999999999999.9,0.5e-6,1e-6]",
            "[null,0,1.23e-18,0.1,100,100000000000000000000,-5e-7,4.35,0.30000000000000004,9007199254740992,100,2e-7,1.5e+300,999999999999999,1000000000000000,-999999999999999.9,5e-7,0.000001]",
        ),
        (
            "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u0000\\u001f\\u007f\\u0080\\u2028\\u2029\\u00e9\\uFFFF\\u0008\\u000b\\u001b\"",
            "\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\\u0000\\u001f\u{7f}\u{80}\u{2028}\u{2029}\u{e9}\u{ffff}\\b\\u000b\\u001b\"",
        ),
        ("\"\\ud800\"", "\"\\ud800\""),
        ("\"\\uD83D\\uDE00\"", "\"\u{1f600}\""),
        ("\"\\udc00\\ud800\"", "\"\\udc00\\ud800\""),
        ("\"\\ud83d\\ud83d\\ude00\"", "\"\\ud83d\u{1f600}\""),
        ("\"x\\udfffy\"", "\"x\\udfffy\""),
        ("\"\\uD800\\u0041\"", "\"\\ud800A\""),
        ("\"\\uDBFF\\uDFFF\\uD800\"", "\"\u{10ffff}\\ud800\""),
        (
            "{\"\\ud800\":1,\"\\ud83d\\ude00\":2}",
            "{\"\\ud800\":1,\"\u{1f600}\":2}",
        ),
        (
            "\"raw \u{80}\u{9f} \u{7f} / \u{e9} \u{1f600} \u{2028} \u{feff}\"",
            "\"raw \u{80}\u{9f} \u{7f} / \u{e9} \u{1f600} \u{2028} \u{feff}\"",
        ),
        (
            "{\"__proto__\":{\"x\":1},\"constructor\":1,\"toString\":2,\"hasOwnProperty\":3}",
            "{\"__proto__\":{\"x\":1},\"constructor\":1,\"toString\":2,\"hasOwnProperty\":3}",
        ),
        ("[[],{},[{}],{\"a\":[]}]", "[[],{},[{}],{\"a\":[]}]"),
        (" \t\n\r{ \"a\" : [ 1 , 2 ] } \n", "{\"a\":[1,2]}"),
        (
            "\"0123456\\\"89abcdef\\\\0123456789\\n0123\"",
            "\"0123456\\\"89abcdef\\\\0123456789\\n0123\"",
        ),
        ("\"abcdefg\\u0001\"", "\"abcdefg\\u0001\""),
        ("\"abcdefgh\\u001f\"", "\"abcdefgh\\u001f\""),
        (
            "\"\u{e9}\u{1f600}abcd\\\"efghijklmnop\u{7f}qrstuvw\u{2028}xyz\\\\\"",
            "\"\u{e9}\u{1f600}abcd\\\"efghijklmnop\u{7f}qrstuvw\u{2028}xyz\\\\\"",
        ),
        (
            "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\\tb\"",
            "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\\tb\"",
        ),
        (
            "\"ab\\u0063\\ud83d\\ude00\\u0041\u{e9}\"",
            "\"abc\u{1f600}A\u{e9}\"",
        ),
        ("true", "true"),
        (" false ", "false"),
        ("null", "null"),
        ("0", "0"),
        ("-0", "0"),
        ("\"x\"", "\"x\""),
        ("\"\"", "\"\""),
        ("[true,false,null]", "[true,false,null]"),
    ];
    const ERR_CASES: &[(&str, &str)] = &[
        ("", "Unexpected end of JSON input"),
        (" ", "Unexpected end of JSON input"),
        ("x", "Unexpected token 'x', \"x\" is not valid JSON"),
        ("+1", "Unexpected token '+', \"+1\" is not valid JSON"),
        (".5", "Unexpected token '.', \".5\" is not valid JSON"),
        ("1.", "Unterminated fractional number in JSON at position 2"),
        (
            "1e",
            "Exponent part is missing a number in JSON at position 2",
        ),
        (
            "1e+",
            "Exponent part is missing a number in JSON at position 3",
        ),
        ("-", "No number after minus sign in JSON at position 1"),
        ("-a", "No number after minus sign in JSON at position 1"),
        ("01", "Unexpected number in JSON at position 1"),
        ("[01]", "Unexpected number in JSON at position 2"),
        ("-01", "Unexpected number in JSON at position 2"),
        (
            "1 2",
            "Unexpected non-whitespace character after JSON at position 2",
        ),
        ("[1,]", "Unexpected token ']', \"[1,]\" is not valid JSON"),
        (
            "[1 2]",
            "Expected ',' or ']' after array element in JSON at position 3",
        ),
        (
            "{a:1}",
            "Expected property name or '}' in JSON at position 1",
        ),
        (
            "{\"a\" 1}",
            "Expected ':' after property name in JSON at position 5",
        ),
        (
            "{\"a\":1,}",
            "Expected double-quoted property name in JSON at position 7",
        ),
        (
            "{\"a\":1 \"b\"}",
            "Expected ',' or '}' after property value in JSON at position 7",
        ),
        ("\"\\x\"", "Bad escaped character in JSON at position 2"),
        ("\"\\u12\"", "Bad Unicode escape in JSON at position 5"),
        ("\"\\u12g4\"", "Bad Unicode escape in JSON at position 5"),
        ("\"\\u", "Bad Unicode escape in JSON at position 3"),
        ("\"abc", "Unterminated string in JSON at position 4"),
        (
            "\"a\u{1}\"",
            "Bad control character in string literal in JSON at position 2",
        ),
        (
            "\"\t\"",
            "Bad control character in string literal in JSON at position 1",
        ),
        ("[", "Unexpected end of JSON input"),
        ("{", "Expected property name or '}' in JSON at position 1"),
        (
            "{\"a\"",
            "Expected ':' after property name in JSON at position 4",
        ),
        ("{\"a\":", "Unexpected end of JSON input"),
        (
            "[1",
            "Expected ',' or ']' after array element in JSON at position 2",
        ),
        ("tru", "Unexpected end of JSON input"),
        ("trux", "Unexpected token 'x', \"trux\" is not valid JSON"),
        ("t1", "Unexpected number in JSON at position 1"),
        ("t\"", "Unexpected string in JSON at position 1"),
        ("t ", "Unexpected token ' ', \"t \" is not valid JSON"),
        ("[tru]", "Unexpected token ']', \"[tru]\" is not valid JSON"),
        ("NaN", "\"NaN\" is not valid JSON"),
        ("Infinity", "\"Infinity\" is not valid JSON"),
        ("undefined", "\"undefined\" is not valid JSON"),
        ("[object Object]", "\"[object Object]\" is not valid JSON"),
        (
            "\"abc\" x",
            "Unexpected non-whitespace character after JSON at position 6",
        ),
        (
            "[1,2,3,4,5,6,7,8,9,10,x]",
            "Unexpected token 'x', ...\",7,8,9,10,x]\" is not valid JSON",
        ),
        (
            "x234567890123456789012345",
            "Unexpected token 'x', \"x234567890\"... is not valid JSON",
        ),
        (
            "[1,2,3,4,5,x,7,8,9,1,2,3,4,5,6,7,8,9,9]",
            "Unexpected token 'x', ...\"1,2,3,4,5,x,7,8,9,1,\"... is not valid JSON",
        ),
        (
            "xxxxxxxxxxxxxxxxxxxx",
            "Unexpected token 'x', \"xxxxxxxxxxxxxxxxxxxx\" is not valid JSON",
        ),
        (
            "xxxxxxxxxxxxxxxxxxxxx",
            "Unexpected token 'x', \"xxxxxxxxxx\"... is not valid JSON",
        ),
        ("\"\\", "Unexpected end of JSON input"),
        (
            "\u{1f600}x",
            "Unexpected token '\u{fffd}', \"\u{1f600}x\" is not valid JSON",
        ),
        (
            "\"\u{1f600}\" x",
            "Unexpected non-whitespace character after JSON at position 5",
        ),
        (
            "[\"\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\", y]",
            "Unexpected token 'y', ...\"\u{fffd}\u{1f600}\u{1f600}\u{1f600}\", y]\" is not valid JSON",
        ),
        (
            "[\"\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\", y, \"\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}\"]",
            "Unexpected token 'y', ...\"\u{fffd}\u{1f600}\u{1f600}\u{1f600}\", y, \"\u{1f600}\u{1f600}\u{1f600}\"... is not valid JSON",
        ),
        (
            "\"\\uD800\\uDC0\"",
            "Bad Unicode escape in JSON at position 12",
        ),
        (
            "\u{a0}[]",
            "Unexpected token '\u{a0}', \"\u{a0}[]\" is not valid JSON",
        ),
        (
            "\u{feff}[]",
            "Unexpected token '\u{feff}', \"\u{feff}[]\" is not valid JSON",
        ),
        (
            "[1,2,3,4,5,6,7,8,9,1,2,3,4,t\n]",
            "Unexpected token '\n', ...\",1,2,3,4,t\n]\" is not valid JSON",
        ),
        (
            "{\"a\"::1}",
            "Unexpected token ':', \"{\"a\"::1}\" is not valid JSON",
        ),
        (
            "[0x10]",
            "Expected ',' or ']' after array element in JSON at position 2",
        ),
        (
            "[-Infinity]",
            "No number after minus sign in JSON at position 2",
        ),
        ("'a'", "Unexpected token ''', \"'a'\" is not valid JSON"),
        (
            "[1.2.3]",
            "Expected ',' or ']' after array element in JSON at position 4",
        ),
        ("{,}", "Expected property name or '}' in JSON at position 1"),
        (
            "[1]]",
            "Unexpected non-whitespace character after JSON at position 3",
        ),
        (
            "{\"\u{e9}\":1 x}",
            "Expected ',' or '}' after property value in JSON at position 7",
        ),
        (
            "[\"\\uD83D\\uDE00\" x]",
            "Expected ',' or ']' after array element in JSON at position 16",
        ),
    ];
    // A missing ':' after a non-first key uses the generic message in V8.
    const ERR_CASES_LATER_KEY: &[(&str, &str)] = &[
        (
            "{\"a\":1,\"b\"]}",
            "Unexpected token ']', \"{\"a\":1,\"b\"]}\" is not valid JSON",
        ),
        (
            "{\"a\":1,\"b\" 1}",
            "Unexpected number in JSON at position 11",
        ),
        ("{\"a\":1,\"b\"", "Unexpected end of JSON input"),
        (
            "[{\"a\":1},{\"a\"]}]",
            "Expected ':' after property name in JSON at position 13",
        ),
        (
            "{\"x\":null,\"constructor\"]:true}",
            "Unexpected token ']', ...\"nstructor\"]:true}\" is not valid JSON",
        ),
    ];
    const BODY_CASES: &[(&[u8], Result<&str, &str>)] = &[
    (b"", Ok("{}")),
    (b"   ", Err("Unexpected end of JSON input")),
    (b"\x0d\x0a\x09 ", Err("Unexpected end of JSON input")),
    (b"\xef\xbb\xbf", Ok("{}")),
    (b"\xef\xbb\xbf{\x22a\x22:1}", Ok("{\"a\":1}")),
    (b"\xef\xbb\xbf\xef\xbb\xbf{}", Err("Unexpected token '\u{feff}', \"\u{feff}{}\" is not valid JSON")),
    (b"x", Err("Unexpected token 'x', \"x\" is not valid JSON")),
    (b"123", Err("Unexpected token '1', \"123\" is not valid JSON")),
    (b"null", Err("Unexpected token 'n', \"null\" is not valid JSON")),
    (b"\x22str\x22", Err("Unexpected token '\"', \"\"str\"\" is not valid JSON")),
    (b" \x09\x22hello world, this is long\x22", Err("Unexpected token '\"', \" \t\"hello wor\"... is not valid JSON")),
    (b"\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a  true and a lot more text here", Err("Unexpected token 't', ...\"\n\n\n\n\n\n\n\n  true and a\"... is not valid JSON")),
    (b"\x09\xf0\x9f\x98\x80abc", Err("Unexpected token '\u{fffd}', \"\t\u{1f600}abc\" is not valid JSON")),
    (b" [1,2] ", Ok("[1,2]")),
    (b"{\x22a\x22:\x22\xff\xc3(\xe2\x82\x22}", Ok("{\"a\":\"\u{fffd}\u{fffd}(\u{fffd}\"}")),
    (b"{\x22k\xf0\x9f\x98\x22:\x22\xed\xa0\x80\xc0\xaf\xf4\x90\x80\x80\x22}", Ok("{\"k\u{fffd}\":\"\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\"}")),
    (b"\xef\xbb\xbf[]", Ok("[]")),
    (b"\xef\xbb[]", Err("Unexpected token '\u{fffd}', \"\u{fffd}[]\" is not valid JSON")),
    (b"{\x22a\x22:1}x", Err("Unexpected non-whitespace character after JSON at position 7")),
    (b"  zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", Err("Unexpected token 'z', \"  zzzzzzzzzz\"... is not valid JSON")),
    (b"\xc2\xa0{}", Err("Unexpected token '\u{a0}', \"\u{a0}{}\" is not valid JSON")),
    (b"\x22\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\x22", Err("Unexpected token '\"', \"\"\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{fffd}\"... is not valid JSON")),
    (b"{\x22walletId\x22:\x22w\x22,\x22payload\x22:\x22p\x22}", Ok("{\"walletId\":\"w\",\"payload\":\"p\"}")),
    ];

    fn roundtrip(input: &str) -> String {
        match parse(input) {
            Ok(v) => v.to_json(),
            Err(e) => format!("ERROR: {e}"),
        }
    }

    #[test]
    fn node_roundtrip_cases() {
        for &(input, expected) in OK_CASES {
            assert_eq!(roundtrip(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn node_error_messages() {
        for &(input, expected) in ERR_CASES.iter().chain(ERR_CASES_LATER_KEY) {
            match parse(input) {
                Ok(v) => panic!("{input:?} parsed as {}", v.to_json()),
                Err(e) => {
                    assert_eq!(e.message, expected, "input {input:?}");
                    assert_eq!(e.to_string(), expected);
                }
            }
        }
    }

    #[test]
    fn body_parser_cases() {
        for (input, expected) in BODY_CASES {
            let got = parse_body(input)
                .map(|v| v.to_json())
                .map_err(|e| e.message);
            let want = expected.map(str::to_owned).map_err(str::to_owned);
            assert_eq!(got, want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn error_positions_are_byte_offsets() {
        let e = parse("{\"é\":1 x}").unwrap_err();
        assert_eq!(e.position, 8); // message says 7 (UTF-16), byte offset is 8
        assert_eq!(parse("[1,]").unwrap_err().position, 3);
        assert_eq!(parse("\"abc").unwrap_err().position, 4);
        assert_eq!(parse("").unwrap_err().position, 0);
        assert_eq!(parse_body(b"  x").unwrap_err().position, 2);
    }

    #[test]
    fn sdk_sign_vectors() {
        let text = std::fs::read_to_string(SDK_VECTORS)
            .expect("the SDK vectors are part of the repository (tests/vectors)");
        let root = parse(&text).expect("vector file is JSON");
        let signs = root
            .get("sign")
            .and_then(JsValue::as_array)
            .expect("sign array");
        assert_eq!(signs.len(), 62);
        for (n, v) in signs.iter().enumerate() {
            let id = v.get("id").map(JsValue::to_json).unwrap_or_default();
            let raw = v
                .get("rawBody")
                .and_then(JsValue::as_js_string)
                .expect("rawBody");
            let body = parse_body(raw.to_utf8_lossy().as_bytes())
                .unwrap_or_else(|e| panic!("vector {n} {id}: {e}"));
            let payload = body.get("payload").expect("payload");
            let is_string = v.get("payloadIsString").and_then(JsValue::as_bool);
            assert_eq!(
                is_string,
                Some(payload.type_of() == "string"),
                "vector {n} {id}"
            );
            let got: Vec<u8> = match payload {
                JsValue::String(s) => s.to_utf8_lossy().as_bytes().to_vec(),
                other => other.to_json().into_bytes(),
            };
            match v.get("payloadString") {
                Some(JsValue::String(want)) => {
                    let want = want.as_str().expect("payloadString is well-formed");
                    assert_eq!(got, want.as_bytes(), "vector {n} {id}");
                }
                Some(JsValue::Null) => {
                    assert!(
                        payload
                            .as_js_string()
                            .is_some_and(JsString::has_lone_surrogate)
                    );
                    let hex = v
                        .get("payloadUtf8Hex")
                        .and_then(JsValue::as_str)
                        .expect("hex");
                    let got_hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
                    assert_eq!(got_hex, hex.to_ascii_lowercase(), "vector {n} {id}");
                }
                other => panic!("vector {n} {id}: bad payloadString {other:?}"),
            }
            if let Some(len) = v.get("payloadUtf8Length").and_then(JsValue::as_f64) {
                assert_eq!(got.len() as f64, len, "vector {n} {id}");
            }
        }
    }

    #[test]
    fn number_to_string_matches_node() {
        // Node: String(x)
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (-0.0, "0"),
            (0.0, "0"),
            (1e21, "1e+21"),
            (1e-7, "1e-7"),
            (0.000001, "0.000001"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (0.1, "0.1"),
            (123456789012345680000.0, "123456789012345680000"),
            (1.5e-9, "1.5e-9"),
            (-42.0, "-42"),
            (999999999999999.0, "999999999999999"),
            (1e15, "1000000000000000"),
            (9007199254740993.0, "9007199254740992"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ];
        for &(n, want) in cases {
            assert_eq!(number_to_string(n), want, "{n:e}");
        }
        let nonfinite = JsValue::Array(vec![f64::NAN.into(), f64::INFINITY.into(), (-0.0).into()]);
        assert_eq!(nonfinite.to_json(), "[null,null,0]");
    }

    #[test]
    fn lone_surrogates() {
        let v = parse("\"a\\ud800b\"").unwrap();
        let s = v.as_js_string().unwrap();
        assert!(s.has_lone_surrogate());
        assert_eq!(s.as_str(), None);
        assert_eq!(v.as_str(), None);
        assert_eq!(s.as_wtf8_bytes(), b"a\xed\xa0\x80b");
        assert_eq!(s.to_utf8_lossy().as_bytes(), b"a\xef\xbf\xbdb");
        assert_eq!(s.len_utf16(), 3);
        assert_eq!(format!("{s:?}"), "\"a\\u{d800}b\"");
        assert_eq!(v.to_json(), "\"a\\ud800b\"");
        assert!(v.is_truthy());
        // A combined pair is a normal string and equals its &str form.
        let v = parse("\"\\uD83D\\uDE00\"").unwrap();
        assert_eq!(v.as_str(), Some("😀"));
        assert_eq!(v.as_js_string().unwrap(), &"😀");
        assert_eq!(v.as_js_string().unwrap().len_utf16(), 2);
        // from_utf16 agrees with the parser.
        let u = JsString::from_utf16(&[0xDC00, 0xD800, 0x41, 0xD83D, 0xDE00]);
        assert_eq!(
            JsValue::from(u.clone()),
            parse("\"\\udc00\\ud800A\\ud83d\\ude00\"").unwrap()
        );
        assert_eq!(JsValue::from(u).to_json(), "\"\\udc00\\ud800A😀\"");
        // Lone-surrogate keys are distinct keys and serialise escaped.
        let o = parse("{\"\\ud800\":1,\"\\udc00\":2,\"\\ud800\":3}").unwrap();
        assert_eq!(o.to_json(), "{\"\\ud800\":3,\"\\udc00\":2}");
    }

    #[test]
    fn write_json_str_escapes() {
        let mut out = String::new();
        write_json_str(
            &mut out,
            "a\"\\/\u{8}\u{c}\n\r\t\u{0}\u{1f}\u{7f}\u{2028}é😀",
        );
        assert_eq!(
            out,
            "\"a\\\"\\\\/\\b\\f\\n\\r\\t\\u0000\\u001f\u{7f}\u{2028}é😀\""
        );
    }

    fn nested(depth: usize) -> String {
        let mut s = "[".repeat(depth);
        s.push_str(&"]".repeat(depth));
        s
    }

    #[test]
    fn depth_limit() {
        let ok = nested(MAX_DEPTH);
        assert_eq!(parse(&ok).unwrap().to_json(), ok);
        let e = parse(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(e.message, "JSON nesting exceeds 4096 levels");
        assert_eq!(e.position, MAX_DEPTH);
        // Objects count too.
        let obj = |d: usize| format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d));
        assert!(parse(&obj(MAX_DEPTH)).is_ok());
        assert!(parse(&obj(MAX_DEPTH + 1)).is_err());
        // Mixed, with the innermost container empty.
        let mixed = format!("{}{{}}{}", "[{\"k\":".repeat(2048), "}]".repeat(2048));
        assert!(parse(&mixed).is_err()); // 4097 levels
        // A million levels: error, no stack overflow.
        let huge = "[".repeat(1_000_000);
        assert_eq!(
            parse(&huge).unwrap_err().message,
            "JSON nesting exceeds 4096 levels"
        );
        assert!(parse_body(huge.as_bytes()).is_err());
    }

    #[test]
    fn large_object_is_linear() {
        let n = 200_000;
        let mut text = String::with_capacity(n * 24);
        text.push('{');
        for i in 0..n {
            text.push_str(&format!("\"key{i}\":{i},"));
        }
        // Duplicates and array-index keys at the end.
        text.push_str("\"key5\":\"dup\",\"7\":1,\"3\":2,\"7\":3}");
        let t = std::time::Instant::now();
        let v = parse(&text).unwrap();
        let elapsed = t.elapsed();
        assert!(elapsed.as_secs_f64() < 5.0, "parse took {elapsed:?}");
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), n + 2);
        assert_eq!(o.get("key5").and_then(JsValue::as_str), Some("dup"));
        assert_eq!(o.get("key199999").and_then(JsValue::as_f64), Some(199999.0));
        assert_eq!(o.get("7").and_then(JsValue::as_f64), Some(3.0));
        let json = v.to_json();
        assert!(json.starts_with("{\"3\":2,\"7\":3,\"key0\":0,\"key1\":1,"));
        assert!(json.ends_with(",\"key199999\":199999}"));
        assert!(json.contains(",\"key5\":\"dup\",\"key6\":6,"));
    }

    #[test]
    fn object_insert_order_matches_node() {
        // Node: o={}; o.b=1; o["10"]=2; o["2"]=3; o.a=4; o["1"]=5; o.b=6;
        //       o["4294967295"]=7; o["4294967294"]=8; o["01"]=9
        let mut o = JsObject::new();
        o.insert("b", 1);
        o.insert("10", 2);
        o.insert("2", 3);
        o.insert("a", 4);
        o.insert("1", 5);
        o.insert("b", 6);
        o.insert("4294967295", 7);
        o.insert("4294967294", 8);
        o.insert("01", 9);
        let mut v = JsValue::from(o);
        assert_eq!(
            v.to_json(),
            "{\"1\":5,\"2\":3,\"10\":2,\"4294967294\":8,\"b\":6,\"a\":4,\"4294967295\":7,\"01\":9}"
        );
        // delete o.b; delete o["2"]; o.b=10; o["2"]=11
        let o = v.as_object_mut().unwrap();
        assert_eq!(o.remove("b"), Some(JsValue::Number(6.0)));
        assert_eq!(o.remove("2"), Some(JsValue::Number(3.0)));
        assert_eq!(o.remove("nope"), None);
        o.insert("b", 10);
        o.insert("2", 11);
        assert_eq!(
            v.to_json(),
            "{\"1\":5,\"2\":11,\"10\":2,\"4294967294\":8,\"a\":4,\"4294967295\":7,\"01\":9,\"b\":10}"
        );
    }

    #[test]
    fn large_object_insert_remove_matches_node() {
        // Node: p={}; for (i=0;i<40;i++) p["k"+i]=i; for (i=39;i>=0;i-=3) p[String(i*7)]=i;
        //       delete p.k5; delete p["7"]; p.k5="again"; p.k0="zero"
        let mut p = JsObject::new();
        for i in 0..40 {
            p.insert(format!("k{i}"), i);
        }
        for i in (0..=39).rev().step_by(3) {
            p.insert((i * 7).to_string(), i);
        }
        p.remove("k5");
        p.remove("7");
        p.insert("k5", "again");
        p.insert("k0", "zero");
        let mut want = String::from(
            "{\"0\":0,\"21\":3,\"42\":6,\"63\":9,\"84\":12,\"105\":15,\"126\":18,\"147\":21,\
             \"168\":24,\"189\":27,\"210\":30,\"231\":33,\"252\":36,\"273\":39,\"k0\":\"zero\"",
        );
        for i in (1..40).filter(|&i| i != 5) {
            want.push_str(&format!(",\"k{i}\":{i}"));
        }
        want.push_str(",\"k5\":\"again\"}");
        assert_eq!(JsValue::from(p.clone()).to_json(), want);
        // The hash index stays consistent with positions after shifting inserts/removes.
        for (k, v) in p.iter() {
            assert_eq!(p.get(k.as_str().unwrap()), Some(v));
        }
        assert_eq!(p.get("k5").and_then(JsValue::as_str), Some("again"));
        assert!(p.contains_key("273") && !p.contains_key("7"));
        *p.get_mut("k1").unwrap() = JsValue::Null;
        assert_eq!(p.get("k1"), Some(&JsValue::Null));
        assert_eq!(p.keys().count(), p.len());
    }

    #[test]
    fn key_index_collision_chain() {
        // Force every key onto the same 64-bit hash to exercise the collision chain.
        let entries: Vec<Entry> = ["a", "b", "c"]
            .iter()
            .map(|&k| (JsString::from(k), JsValue::Null))
            .collect();
        let mut idx = KeyIndex::build(&[]);
        for _ in &entries {
            idx.push(42);
        }
        assert_eq!(idx.find(&entries, b"a", 42), Some(0));
        assert_eq!(idx.find(&entries, b"b", 42), Some(1));
        assert_eq!(idx.find(&entries, b"c", 42), Some(2));
        assert_eq!(idx.find(&entries, b"d", 42), None);
        assert_eq!(idx.find(&entries, b"a", 7), None);
    }

    #[test]
    fn value_helpers() {
        let v =
            parse("{\"s\":\"\",\"n\":0,\"m\":-0,\"x\":1,\"t\":true,\"z\":null,\"a\":[],\"o\":{}}")
                .unwrap();
        let falsy = ["s", "n", "m", "z"];
        for (k, val) in v.as_object().unwrap().iter() {
            let k = k.as_str().unwrap();
            assert_eq!(val.is_truthy(), !falsy.contains(&k), "{k}");
        }
        assert!(!JsValue::Number(f64::NAN).is_truthy());
        assert!(!JsValue::Bool(false).is_truthy());
        assert_eq!(v.get("z").unwrap().type_of(), "object");
        assert_eq!(v.get("a").unwrap().type_of(), "object");
        assert_eq!(v.get("o").unwrap().type_of(), "object");
        assert_eq!(v.get("s").unwrap().type_of(), "string");
        assert_eq!(v.get("n").unwrap().type_of(), "number");
        assert_eq!(v.get("t").unwrap().type_of(), "boolean");
        assert_eq!(v.get("x").and_then(JsValue::as_f64), Some(1.0));
        assert_eq!(v.get("s").and_then(JsValue::as_str), Some(""));
        assert_eq!(
            v.get("a").and_then(JsValue::as_array).map(<[_]>::len),
            Some(0)
        );
        assert!(v.get("missing").is_none());
        assert!(v.get("a").unwrap().get("0").is_none());
        assert!(JsValue::from("x").as_object().is_none());
        let built: JsObject = [
            ("walletId", JsValue::from("w")),
            ("payload", JsValue::from(1.5)),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            JsValue::from(built).to_json(),
            "{\"walletId\":\"w\",\"payload\":1.5}"
        );
        let s = JsString::from("k");
        assert_eq!(s, "k");
        assert_eq!(s, *"k");
        assert_eq!(format!("{s:?}"), "\"k\"");
        assert!(JsString::default().is_empty());
    }
}
