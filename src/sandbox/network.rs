//! BitGo's Go Network endpoints (`/api/network/v1|v2/enterprises/:eid/…`), served like a strict
//! BitGo: partner settlements (with the `settlements-signing` helper), client connections,
//! allocations and deallocations (with their `…/signing` helpers), and the partner list.
//!
//! Every request must carry `enterprise-id: <eid>` equal to the path's. Whatever is created must
//! carry a Bitcoin signed-message signature by the enterprise's trading account key over the
//! SANDBOX'S OWN canonical payload string (connections: over the V8-exact `JSON.stringify` of the
//! body without `payload` and `signature`), so a client that signs anything else is caught.
//! Creations are idempotent on the external id: the identical request again → 200 with the
//! existing record, anything different → 409.

use std::collections::{HashMap, HashSet};

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{Sandbox, Shared, header, json, percent_decode};
use crate::js_json::{self, JsObject, JsValue};
use crate::keys::xprv::public_key_from_extended;
use crate::message_sign::verify_message;

/// The `partnerId` every sandbox settlement is recorded under (BitGo's documentation example).
pub const SETTLEMENT_PARTNER_ID: &str = "b5ea2e6e-4430-44fa-8dc1-bf3cb21463d0";
/// The `cutoffAt` of a settlement created without one (BitGo's documentation example).
pub const DEFAULT_CUTOFF_AT: &str = "2023-01-26T00:31:26+0000";

/// A Go Network partner an enterprise can connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    pub id: String,
    pub name: String,
    /// SPKI PEM; when set it is listed as `publicKey` (clients encrypt connection keys with it).
    pub public_key_pem: Option<String>,
    /// `token`, `tokenAndSignature`, `apiKeyAndSecret`, `clearloop` (or any other name).
    pub connection_key_schema: String,
}

/// A creation the sandbox accepted, for idempotent replays.
struct Created {
    payload: String,
    /// Lowercase hex.
    signature: String,
    document: JsValue,
}

#[derive(Default)]
struct Enterprise {
    trading_account: Option<String>,
    partners: Vec<Partner>,
    settlements: Vec<JsValue>,
    settlements_by_external_id: HashMap<String, Created>,
    /// Allocations and deallocations share one `clientExternalId` namespace.
    allocations_by_client_external_id: HashMap<String, Created>,
    connections: HashSet<String>,
}

/// The Go Network part of the sandbox state.
#[derive(Default)]
pub(super) struct Network {
    enterprises: HashMap<String, Enterprise>,
    settlements: Vec<JsValue>,
    allocations: Vec<JsValue>,
    connections: Vec<JsValue>,
    creates: usize,
}

impl Sandbox {
    /// Serves Go Network enterprise `enterprise_id`, whose trading account is the wallet
    /// `trading_account_wallet_id` (added with [`Sandbox::add_wallet`]): its user keychain's
    /// `pub` verifies every signature of the enterprise's settlements, allocations and
    /// connections.
    pub fn add_enterprise(&self, enterprise_id: &str, trading_account_wallet_id: &str) {
        let mut inner = self.shared.lock();
        inner
            .network
            .enterprises
            .entry(enterprise_id.to_string())
            .or_default()
            .trading_account = Some(trading_account_wallet_id.to_string());
    }

    /// Lists `partner` for `enterprise_id` (replacing a partner with the same id).
    pub fn add_partner(&self, enterprise_id: &str, partner: Partner) {
        let mut inner = self.shared.lock();
        let partners = &mut inner
            .network
            .enterprises
            .entry(enterprise_id.to_string())
            .or_default()
            .partners;
        match partners.iter_mut().find(|p| p.id == partner.id) {
            Some(existing) => *existing = partner,
            None => partners.push(partner),
        }
    }

    /// The settlements created so far (all enterprises, oldest first), as returned on creation.
    pub fn settlements(&self) -> Vec<JsValue> {
        self.shared.lock().network.settlements.clone()
    }

    /// The allocations and deallocations created so far (oldest first), as returned on creation
    /// (`type` tells them apart).
    pub fn allocations(&self) -> Vec<JsValue> {
        self.shared.lock().network.allocations.clone()
    }

    /// The bodies of the connections created so far (oldest first), exactly as received.
    pub fn connections(&self) -> Vec<JsValue> {
        self.shared.lock().network.connections.clone()
    }

    /// How many settlements, allocations, deallocations and connections were created (replays
    /// do not count).
    pub fn create_count(&self) -> usize {
        self.shared.lock().network.creates
    }
}

/// An error answer: `{"error": message}` plus `name` when given.
struct Failure {
    status: StatusCode,
    body: JsValue,
}

type Outcome<T> = Result<T, Failure>;

fn fail(status: StatusCode, message: &str, name: Option<&str>) -> Failure {
    let mut body = JsObject::new();
    body.insert("error", message);
    if let Some(name) = name {
        body.insert("name", name);
    }
    Failure {
        status,
        body: JsValue::Object(body),
    }
}

fn validation(message: &str) -> Failure {
    fail(StatusCode::BAD_REQUEST, message, Some("ValidationError"))
}

fn not_found() -> Failure {
    fail(StatusCode::NOT_FOUND, "not found", Some("NotFound"))
}

fn wrap(key: &str, value: JsValue) -> JsValue {
    let mut out = JsObject::new();
    out.insert(key, value);
    JsValue::Object(out)
}

/// One request, after routing.
struct Ctx<'a> {
    shared: &'a Shared,
    enterprise_id: &'a str,
}

/// Serves `/api/network/…` for an authenticated caller.
pub(super) fn route(
    shared: &Shared,
    method: &str,
    segments: &[&str],
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    match dispatch(shared, method, segments, query, headers, body) {
        Ok((status, body)) => json(status, body),
        Err(failure) => json(failure.status, failure.body),
    }
}

fn dispatch(
    shared: &Shared,
    method: &str,
    segments: &[&str],
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Outcome<(StatusCode, JsValue)> {
    let [
        "api",
        "network",
        version @ ("v1" | "v2"),
        "enterprises",
        eid,
        rest @ ..,
    ] = segments
    else {
        return Err(not_found());
    };
    let enterprise_id = percent_decode(eid);
    if enterprise_id.is_empty() {
        return Err(not_found());
    }
    if header(headers, "enterprise-id") != Some(enterprise_id.as_str()) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "enterprise-id header must match the path",
            None,
        ));
    }
    if !shared
        .lock()
        .network
        .enterprises
        .contains_key(&enterprise_id)
    {
        return Err(fail(
            StatusCode::NOT_FOUND,
            "enterprise not found",
            Some("EnterpriseNotFound"),
        ));
    }
    let rest: Vec<String> = rest.iter().map(|s| percent_decode(s)).collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let ctx = Ctx {
        shared,
        enterprise_id: &enterprise_id,
    };
    let v2 = *version == "v2";
    match (method, v2, rest.as_slice()) {
        ("GET" | "POST", false, ["partners", "settlements-signing"]) => {
            let fields = settlement_fields(&body_object(body)?)?;
            let payload = settlement_payload(ctx.enterprise_id, &fields);
            Ok((StatusCode::OK, wrap("payload", JsValue::from(payload))))
        }
        ("POST", _, ["partners", "settlements"]) => {
            create_settlement(&ctx, v2, &body_object(body)?)
        }
        ("GET", _, ["partners", "settlements"]) => {
            let inner = ctx.shared.lock();
            let settlements = inner
                .network
                .enterprises
                .get(ctx.enterprise_id)
                .map(|e| e.settlements.clone())
                .unwrap_or_default();
            Ok((
                StatusCode::OK,
                wrap("settlements", JsValue::Array(settlements)),
            ))
        }
        ("GET", false, ["partners"]) => list_partners(&ctx, query, &body_object(body)?),
        ("POST", false, ["clients", "connections"]) => create_connection(&ctx, &body_object(body)?),
        (
            "POST",
            false,
            [
                "clients",
                "connections",
                cid,
                kind @ ("allocations" | "deallocations"),
                "signing",
            ],
        ) => {
            let kind = Kind::from_segment(kind);
            require_connection(&ctx, cid)?;
            let fields = allocation_fields(&body_object(body)?)?;
            let payload = allocation_payload(ctx.enterprise_id, cid, kind, &fields);
            Ok((StatusCode::OK, wrap("payload", JsValue::from(payload))))
        }
        (
            "POST",
            false,
            [
                "clients",
                "connections",
                cid,
                kind @ ("allocations" | "deallocations"),
            ],
        ) => create_allocation(&ctx, cid, Kind::from_segment(kind), &body_object(body)?),
        _ => Err(not_found()),
    }
}

/// The JSON body, which must be an object (an empty body is `{}`).
fn body_object(body: &[u8]) -> Outcome<JsObject> {
    match js_json::parse_body(body) {
        Ok(JsValue::Object(object)) => Ok(object),
        Ok(_) => Err(validation("request body must be a JSON object")),
        Err(e) => Err(fail(
            StatusCode::BAD_REQUEST,
            &format!("invalid JSON body: {}", e.message),
            Some("InvalidRequest"),
        )),
    }
}

/// A required, non-empty, well-formed string field.
fn required_str(object: &JsObject, key: &str, label: &str) -> Outcome<String> {
    match object.get(key) {
        None | Some(JsValue::Null) => Err(validation(&format!("{label} is required"))),
        Some(JsValue::String(s)) if !s.is_empty() => s
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| validation(&format!("{label} must be a well-formed string"))),
        Some(_) => Err(validation(&format!("{label} must be a non-empty string"))),
    }
}

/// An optional string field (absent → `None`; `null` and other types are rejected).
fn optional_str(object: &JsObject, key: &str, allow_empty: bool) -> Outcome<Option<String>> {
    match object.get(key) {
        None => Ok(None),
        Some(JsValue::String(s)) if allow_empty || !s.is_empty() => s
            .as_str()
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| validation(&format!("{key} must be a well-formed string"))),
        Some(_) if allow_empty => Err(validation(&format!("{key} must be a string"))),
        Some(_) => Err(validation(&format!("{key} must be a non-empty string"))),
    }
}

/// `123`, `-4.5` (with `signed`), `0.001`: digits with an optional fraction.
fn is_decimal(text: &str, signed: bool) -> bool {
    let digits = if signed {
        text.strip_prefix('-').unwrap_or(text)
    } else {
        text
    };
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits(int) && frac.is_none_or(all_digits)
}

/// The `payload` and `signature` strings of a create request (signature lowercased).
fn signed_fields(body: &JsObject) -> Outcome<(String, String)> {
    let payload = required_str(body, "payload", "payload")?;
    let signature = required_str(body, "signature", "signature")?.to_ascii_lowercase();
    Ok((payload, signature))
}

/// Checks `signature` over `payload` against the enterprise's trading account key.
fn check_signature(ctx: &Ctx, payload: &str, signature: &str) -> Outcome<()> {
    let xpub = {
        let inner = ctx.shared.lock();
        let account = inner
            .network
            .enterprises
            .get(ctx.enterprise_id)
            .and_then(|e| e.trading_account.clone());
        account
            .as_deref()
            .and_then(|id| inner.wallets.get(id))
            .and_then(|w| w.user_keychain.get("pub").and_then(JsValue::as_str))
            .map(str::to_string)
    };
    let misconfigured = |message: &str| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
            Some("SandboxMisconfigured"),
        )
    };
    let Some(xpub) = xpub else {
        return Err(misconfigured(
            "sandbox: the enterprise's trading account is not a served wallet (add_enterprise/add_wallet)",
        ));
    };
    let key = public_key_from_extended(&xpub)
        .map_err(|_| misconfigured("sandbox: the trading account keychain has no valid pub"))?;
    verify_message(payload.as_bytes(), signature, &key)
        .map_err(|_| fail(StatusCode::BAD_REQUEST, "invalid signature", None))
}

fn now_iso(ctx: &Ctx) -> String {
    iso_time(ctx.shared.clock.now_ms())
}

/// Which idempotency namespace a creation belongs to.
#[derive(Clone, Copy)]
enum Namespace {
    Settlements,
    Allocations,
}

/// Creates `build()` once per `external_id`: the identical `payload` + `signature` again → 200
/// with the existing document; anything different → 409 `duplicate`.
fn create_once(
    ctx: &Ctx,
    namespace: Namespace,
    external_id: &str,
    payload: String,
    signature: String,
    duplicate: &str,
    build: impl FnOnce() -> JsValue,
) -> Outcome<(StatusCode, JsValue)> {
    let mut inner = ctx.shared.lock();
    let Network {
        enterprises,
        settlements,
        allocations,
        creates,
        ..
    } = &mut inner.network;
    let Some(enterprise) = enterprises.get_mut(ctx.enterprise_id) else {
        return Err(fail(
            StatusCode::NOT_FOUND,
            "enterprise not found",
            Some("EnterpriseNotFound"),
        ));
    };
    let registry = match namespace {
        Namespace::Settlements => &mut enterprise.settlements_by_external_id,
        Namespace::Allocations => &mut enterprise.allocations_by_client_external_id,
    };
    if let Some(existing) = registry.get(external_id) {
        return if existing.payload == payload && existing.signature == signature {
            Ok((StatusCode::OK, existing.document.clone()))
        } else {
            Err(fail(
                StatusCode::CONFLICT,
                duplicate,
                Some("DuplicateExternalId"),
            ))
        };
    }
    let document = build();
    registry.insert(
        external_id.to_string(),
        Created {
            payload,
            signature,
            document: document.clone(),
        },
    );
    match namespace {
        Namespace::Settlements => {
            enterprise.settlements.push(document.clone());
            settlements.push(document.clone());
        }
        Namespace::Allocations => allocations.push(document.clone()),
    }
    *creates += 1;
    Ok((StatusCode::CREATED, document))
}

// ---------------------------------------------------------------------------
// Settlements
// ---------------------------------------------------------------------------

struct SettlementFields {
    external_id: String,
    notes: String,
    amounts: JsValue,
    nonce: String,
    cutoff_at: Option<String>,
}

fn settlement_fields(body: &JsObject) -> Outcome<SettlementFields> {
    let external_id = required_str(body, "externalId", "externalId")?;
    let amounts = match body.get("settlementAmounts") {
        None | Some(JsValue::Null) => return Err(validation("settlementAmounts is required")),
        Some(JsValue::Object(accounts)) => {
            if accounts.is_empty() {
                return Err(validation("settlementAmounts must not be empty"));
            }
            for (account, currencies) in accounts.iter() {
                let account = account.to_utf8_lossy();
                let Some(currencies) = currencies.as_object().filter(|c| !c.is_empty()) else {
                    return Err(validation(&format!(
                        "settlementAmounts.{account} must be a non-empty object of currency amounts"
                    )));
                };
                for (currency, amount) in currencies.iter() {
                    if !amount.as_str().is_some_and(|a| is_decimal(a, true)) {
                        return Err(validation(&format!(
                            "settlementAmounts.{account}.{} must be a decimal string",
                            currency.to_utf8_lossy()
                        )));
                    }
                }
            }
            JsValue::Object(accounts.clone())
        }
        Some(_) => return Err(validation("settlementAmounts must be an object")),
    };
    let nonce = required_str(body, "nonce", "nonce")?;
    let notes = optional_str(body, "notes", true)?.unwrap_or_default();
    let cutoff_at = optional_str(body, "cutoffAt", false)?;
    Ok(SettlementFields {
        external_id,
        notes,
        amounts,
        nonce,
        cutoff_at,
    })
}

/// The canonical settlement payload: `JSON.stringify({version: 1, type: "settlement",
/// enterpriseId, externalId, nonce, notes, settlementAmounts, cutoffAt?})`.
fn settlement_payload(enterprise_id: &str, fields: &SettlementFields) -> String {
    let mut payload = JsObject::new();
    payload.insert("version", 1);
    payload.insert("type", "settlement");
    payload.insert("enterpriseId", enterprise_id);
    payload.insert("externalId", fields.external_id.as_str());
    payload.insert("nonce", fields.nonce.as_str());
    payload.insert("notes", fields.notes.as_str());
    payload.insert("settlementAmounts", fields.amounts.clone());
    if let Some(cutoff_at) = &fields.cutoff_at {
        payload.insert("cutoffAt", cutoff_at.as_str());
    }
    JsValue::Object(payload).to_json()
}

fn create_settlement(ctx: &Ctx, v2: bool, body: &JsObject) -> Outcome<(StatusCode, JsValue)> {
    let fields = settlement_fields(body)?;
    if v2 && fields.cutoff_at.is_none() {
        return Err(validation("cutoffAt is required for v2 settlements"));
    }
    let (payload, signature) = signed_fields(body)?;
    if payload != settlement_payload(ctx.enterprise_id, &fields) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "payload does not match the settlement",
            None,
        ));
    }
    check_signature(ctx, &payload, &signature)?;
    let now = now_iso(ctx);
    let (status, document) = create_once(
        ctx,
        Namespace::Settlements,
        &fields.external_id,
        payload,
        signature,
        &format!(
            "settlement with externalId {} already exists",
            fields.external_id
        ),
        || {
            let mut settlement = JsObject::new();
            settlement.insert("id", uuid::Uuid::new_v4().to_string());
            settlement.insert("partnerId", SETTLEMENT_PARTNER_ID);
            settlement.insert("externalId", fields.external_id.as_str());
            settlement.insert(
                "cutoffAt",
                fields.cutoff_at.as_deref().unwrap_or(DEFAULT_CUTOFF_AT),
            );
            settlement.insert("reason", JsValue::Null);
            settlement.insert("status", "completed");
            settlement.insert("reconciled", false);
            settlement.insert("notes", fields.notes.as_str());
            settlement.insert("createdAt", now.as_str());
            settlement.insert("updatedAt", now.as_str());
            JsValue::Object(settlement)
        },
    )?;
    Ok((status, wrap("settlement", document)))
}

// ---------------------------------------------------------------------------
// Allocations and deallocations
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Kind {
    Allocation,
    Deallocation,
}

impl Kind {
    fn from_segment(segment: &str) -> Kind {
        if segment == "deallocations" {
            Kind::Deallocation
        } else {
            Kind::Allocation
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Allocation => "allocation",
            Kind::Deallocation => "deallocation",
        }
    }
}

struct AllocationFields {
    currency: String,
    quantity: String,
    client_external_id: String,
    nonce: String,
    notes: String,
}

impl AllocationFields {
    fn amount(&self) -> JsValue {
        let mut amount = JsObject::new();
        amount.insert("currency", self.currency.as_str());
        amount.insert("quantity", self.quantity.as_str());
        JsValue::Object(amount)
    }
}

fn allocation_fields(body: &JsObject) -> Outcome<AllocationFields> {
    let (currency, quantity) = match body.get("amount") {
        None | Some(JsValue::Null) => return Err(validation("amount is required")),
        Some(JsValue::Object(amount)) => {
            let currency = required_str(amount, "currency", "amount.currency")?;
            let quantity = required_str(amount, "quantity", "amount.quantity")?;
            if !is_decimal(&quantity, false)
                || !quantity.bytes().any(|b| (b'1'..=b'9').contains(&b))
            {
                return Err(validation(
                    "amount.quantity must be a positive decimal string",
                ));
            }
            (currency, quantity)
        }
        Some(_) => return Err(validation("amount must be an object")),
    };
    let client_external_id = required_str(body, "clientExternalId", "clientExternalId")?;
    let nonce = required_str(body, "nonce", "nonce")?;
    let notes = optional_str(body, "notes", true)?.unwrap_or_default();
    Ok(AllocationFields {
        currency,
        quantity,
        client_external_id,
        nonce,
        notes,
    })
}

/// The canonical allocation payload: `JSON.stringify({version: 1, type, enterpriseId,
/// connectionId, clientExternalId, nonce, amount: {currency, quantity}, notes})`.
fn allocation_payload(
    enterprise_id: &str,
    connection_id: &str,
    kind: Kind,
    fields: &AllocationFields,
) -> String {
    let mut payload = JsObject::new();
    payload.insert("version", 1);
    payload.insert("type", kind.name());
    payload.insert("enterpriseId", enterprise_id);
    payload.insert("connectionId", connection_id);
    payload.insert("clientExternalId", fields.client_external_id.as_str());
    payload.insert("nonce", fields.nonce.as_str());
    payload.insert("amount", fields.amount());
    payload.insert("notes", fields.notes.as_str());
    JsValue::Object(payload).to_json()
}

fn require_connection(ctx: &Ctx, connection_id: &str) -> Outcome<()> {
    let inner = ctx.shared.lock();
    let known = inner
        .network
        .enterprises
        .get(ctx.enterprise_id)
        .is_some_and(|e| e.connections.contains(connection_id));
    if known {
        Ok(())
    } else {
        Err(fail(
            StatusCode::NOT_FOUND,
            "connection not found",
            Some("ConnectionNotFound"),
        ))
    }
}

fn create_allocation(
    ctx: &Ctx,
    connection_id: &str,
    kind: Kind,
    body: &JsObject,
) -> Outcome<(StatusCode, JsValue)> {
    require_connection(ctx, connection_id)?;
    let fields = allocation_fields(body)?;
    let (payload, signature) = signed_fields(body)?;
    if payload != allocation_payload(ctx.enterprise_id, connection_id, kind, &fields) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            &format!("payload does not match the {}", kind.name()),
            None,
        ));
    }
    check_signature(ctx, &payload, &signature)?;
    let now = now_iso(ctx);
    let (status, document) = create_once(
        ctx,
        Namespace::Allocations,
        &fields.client_external_id,
        payload,
        signature,
        &format!(
            "{} with clientExternalId {} already exists",
            kind.name(),
            fields.client_external_id
        ),
        || {
            let mut allocation = JsObject::new();
            allocation.insert("id", uuid::Uuid::new_v4().to_string());
            allocation.insert("connectionId", connection_id);
            allocation.insert("clientExternalId", fields.client_external_id.as_str());
            allocation.insert("amount", fields.amount());
            allocation.insert("notes", fields.notes.as_str());
            allocation.insert("status", "created");
            allocation.insert("type", kind.name());
            allocation.insert("createdAt", now.as_str());
            allocation.insert("updatedAt", now.as_str());
            JsValue::Object(allocation)
        },
    )?;
    Ok((status, wrap(kind.name(), document)))
}

// ---------------------------------------------------------------------------
// Connections and partners
// ---------------------------------------------------------------------------

/// The `connectionKey` fields each known schema requires.
fn schema_fields(schema: &str) -> &'static [&'static str] {
    match schema {
        "token" => &["connectionToken"],
        "tokenAndSignature" => &["connectionToken", "signature"],
        "apiKeyAndSecret" => &["apiKey", "apiSecret"],
        "clearloop" => &[
            "apiKey",
            "apiSecret",
            "clientAccountId",
            "companyRegistrationNumber",
        ],
        _ => &[],
    }
}

fn create_connection(ctx: &Ctx, body: &JsObject) -> Outcome<(StatusCode, JsValue)> {
    let partner_id = required_str(body, "partnerId", "partnerId")?;
    let name = required_str(body, "name", "name")?;
    let connection_key = match body.get("connectionKey") {
        None | Some(JsValue::Null) => return Err(validation("connectionKey is required")),
        Some(JsValue::Object(key)) => key,
        Some(_) => return Err(validation("connectionKey must be an object")),
    };
    let schema = required_str(connection_key, "schema", "connectionKey.schema")?;
    required_str(body, "nonce", "nonce")?;
    let (payload, signature) = signed_fields(body)?;

    let partner_schema = {
        let inner = ctx.shared.lock();
        inner
            .network
            .enterprises
            .get(ctx.enterprise_id)
            .and_then(|e| e.partners.iter().find(|p| p.id == partner_id))
            .map(|p| p.connection_key_schema.clone())
    };
    let Some(partner_schema) = partner_schema else {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            &format!("partner not found for partnerId: {partner_id}"),
            Some("PartnerNotFound"),
        ));
    };
    if schema != partner_schema {
        return Err(validation(&format!(
            "connectionKey.schema must be {partner_schema} for this partner"
        )));
    }
    for field in schema_fields(&schema) {
        required_str(connection_key, field, &format!("connectionKey.{field}"))?;
    }

    let mut unsigned = body.clone();
    unsigned.remove("payload");
    unsigned.remove("signature");
    if payload != JsValue::Object(unsigned).to_json() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "payload does not match the connection",
            None,
        ));
    }
    check_signature(ctx, &payload, &signature)?;

    let now = now_iso(ctx);
    let id = uuid::Uuid::new_v4().to_string();
    {
        let mut inner = ctx.shared.lock();
        let Network {
            enterprises,
            connections,
            creates,
            ..
        } = &mut inner.network;
        if let Some(enterprise) = enterprises.get_mut(ctx.enterprise_id) {
            enterprise.connections.insert(id.clone());
        }
        connections.push(JsValue::Object(body.clone()));
        *creates += 1;
    }
    let mut connection = JsObject::new();
    connection.insert("id", id);
    connection.insert("partnerId", partner_id);
    connection.insert("name", name);
    connection.insert("active", true);
    connection.insert("createdAt", now.as_str());
    connection.insert("updatedAt", now.as_str());
    Ok((
        StatusCode::CREATED,
        wrap("connection", JsValue::Object(connection)),
    ))
}

/// `ids` from the query: `ids=a&ids=b`, `ids[]=a`, `ids=a,b`.
fn query_ids(query: &str) -> Option<Vec<Option<String>>> {
    let mut ids = Vec::new();
    let mut present = false;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if matches!(percent_decode(key).as_str(), "ids" | "ids[]") {
            present = true;
            ids.extend(
                percent_decode(value)
                    .split(',')
                    .filter(|id| !id.is_empty())
                    .map(|id| Some(id.to_string())),
            );
        }
    }
    present.then_some(ids)
}

fn list_partners(
    ctx: &Ctx,
    query: Option<&str>,
    body: &JsObject,
) -> Outcome<(StatusCode, JsValue)> {
    // A JSON body `{"ids": [...]}` (what the SDK sends on GET) or the query may filter; entries
    // that are not strings (Express sends `[null]`) match nothing.
    let filter = match body.get("ids") {
        None => query.and_then(query_ids),
        Some(JsValue::Array(ids)) => Some(
            ids.iter()
                .map(|id| id.as_str().map(str::to_string))
                .collect(),
        ),
        Some(_) => return Err(validation("ids must be an array")),
    }
    .filter(|ids: &Vec<Option<String>>| !ids.is_empty());
    let inner = ctx.shared.lock();
    let partners = inner
        .network
        .enterprises
        .get(ctx.enterprise_id)
        .map(|e| e.partners.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|p| {
            filter
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|id| id.as_deref() == Some(p.id.as_str())))
        })
        .map(partner_document)
        .collect();
    Ok((StatusCode::OK, wrap("partners", JsValue::Array(partners))))
}

fn partner_document(partner: &Partner) -> JsValue {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("institution:{}", partner.id));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let institution_id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let identifier: String = partner
        .name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut document = JsObject::new();
    document.insert("id", partner.id.as_str());
    document.insert("name", partner.name.as_str());
    document.insert("institutionId", institution_id.to_string());
    document.insert("institutionIdentifier", identifier);
    document.insert(
        "connectionKeySchema",
        partner.connection_key_schema.as_str(),
    );
    document.insert("active", true);
    if let Some(pem) = &partner.public_key_pem {
        document.insert("publicKey", pem.as_str());
    }
    JsValue::Object(document)
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/// `new Date(ms).toISOString()`.
fn iso_time(ms: u64) -> String {
    let seconds = ms / 1000;
    let day_seconds = seconds % 86_400;
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        day_seconds / 3600,
        day_seconds % 3600 / 60,
        day_seconds % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(1_715_086_801_131), "2024-05-07T13:00:01.131Z");
        assert_eq!(iso_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn decimals() {
        assert!(is_decimal("100", false));
        assert!(is_decimal("-200.5", true));
        assert!(!is_decimal("-200", false));
        assert!(!is_decimal("1.", true));
        assert!(!is_decimal("", true));
        assert!(!is_decimal("1e3", true));
    }
}
