//! The sandbox's Go Network endpoints (settlements, connections, allocations, partners), driven
//! directly over HTTP with HMAC-signed requests, as a strict BitGo would answer them.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use ofc_signer::js_json::{self, JsValue};
use ofc_signer::keys::envelope::{self, EnvelopeVersion};
use ofc_signer::keys::xprv::{SigningKey, master_xprv_from_seed, xpub_from_xprv};
use ofc_signer::message_sign::sign_message_hex;
use ofc_signer::sandbox::{
    DEFAULT_CUTOFF_AT, Fault, Partner, SETTLEMENT_PARTNER_ID, Sandbox, SandboxWallet,
    keychain_document,
};
use ofc_signer::upstream::client::{ClientSettings, SystemClock, UpstreamClient, UpstreamRequest};
use ofc_signer::upstream::hmac::{AccessToken, AuthVersion};

/// An HMAC-capable token (67 characters, `v2x` prefix; public, test only).
const TOKEN: &str = "v2x9f3c1e0d2b4a6978f5e3d1c0b9a8f7e6d5c4b3a291807f6e5d4c3b2a1908f7e6";
const LEGACY_TOKEN: &str = "legacy-network-token";
const EID: &str = "e00000000000000000000000000000aa";
const WALLET_ID: &str = "61f0000000000000000000000000000a";
const SEED: &str = "ofc-signer sandbox network test trading account - public seed";
const OTHER_SEED: &str = "ofc-signer sandbox network test - some other key - public seed";
const PASSPHRASE: &str = "sandbox network test passphrase";
const PARTNER_ID: &str = "9a0f6c4e-51b3-4d44-9a43-0f6b1f3c2d10";
const PLAIN_PARTNER_ID: &str = "2b7e1c55-8d0a-4f7e-b0a5-3c9d4e6f7a81";
const PARTNER_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAsandboxonly\n-----END PUBLIC KEY-----\n";

struct Net {
    sandbox: Sandbox,
    client: UpstreamClient,
    token: AccessToken,
    key: SigningKey,
}

fn key_from_seed(seed: &str) -> (SigningKey, String, String) {
    let xprv = master_xprv_from_seed(seed.as_bytes()).expect("xprv");
    let xpub = xpub_from_xprv(&xprv).expect("xpub");
    let encrypted =
        envelope::encrypt(PASSPHRASE, &xprv, EnvelopeVersion::V1, None).expect("envelope");
    (SigningKey::from_xprv(&xprv).expect("key"), xpub, encrypted)
}

impl Net {
    async fn start() -> Net {
        let sandbox = Sandbox::start().await.expect("sandbox");
        sandbox.add_token(TOKEN);
        sandbox.add_token(LEGACY_TOKEN);
        let (key, xpub, encrypted) = key_from_seed(SEED);
        sandbox.add_wallet(SandboxWallet {
            id: WALLET_ID.to_string(),
            user_keychain: keychain_document("netkey0001", &xpub, &encrypted),
            bitgo_signing_xprv: None,
            user_key_signing_required: None,
            enterprise: EID.to_string(),
        });
        sandbox.add_enterprise(EID, WALLET_ID);
        sandbox.add_partner(
            EID,
            Partner {
                id: PARTNER_ID.to_string(),
                name: "Encrypting Exchange".to_string(),
                public_key_pem: Some(PARTNER_PEM.to_string()),
                connection_key_schema: "token".to_string(),
            },
        );
        sandbox.add_partner(
            EID,
            Partner {
                id: PLAIN_PARTNER_ID.to_string(),
                name: "Plain Venue".to_string(),
                public_key_pem: None,
                connection_key_schema: "apiKeyAndSecret".to_string(),
            },
        );
        let client = UpstreamClient::new(ClientSettings {
            base_url: sandbox.url(),
            auth_version: AuthVersion::V2,
            timeout: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
            proxy: None,
        })
        .expect("client");
        Net {
            sandbox,
            client,
            token: AccessToken::new(TOKEN),
            key,
        }
    }

    /// An HMAC-signed request with `enterprise-id: EID`; returns status and JSON body (2xx
    /// answers have had their response HMAC verified by the client).
    async fn call(&self, method: Method, path: &str, body: Option<&str>) -> (u16, JsValue) {
        self.call_as(method, path, body, Some(EID), Some(&self.token))
            .await
    }

    async fn call_as(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        enterprise_header: Option<&str>,
        token: Option<&AccessToken>,
    ) -> (u16, JsValue) {
        let mut request = UpstreamRequest::new(method, path).token(token);
        if let Some(body) = body {
            request = request.json_body(body.to_string());
        }
        if let Some(eid) = enterprise_header {
            request = request.header(
                HeaderName::from_static("enterprise-id"),
                HeaderValue::from_str(eid).expect("header"),
            );
        }
        let response = self.client.exchange(&request).await.expect("exchange");
        let text = String::from_utf8_lossy(&response.body).into_owned();
        let json = js_json::parse(&text).unwrap_or_else(|e| panic!("not JSON ({e:?}): {text}"));
        (response.status.as_u16(), json)
    }

    fn sign(&self, payload: &str) -> String {
        sign_message_hex(&self.key, payload.as_bytes())
    }

    /// `settlements-signing` → payload string.
    async fn settlement_payload(&self, fields: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                &v1("/partners/settlements-signing"),
                Some(fields),
            )
            .await;
        assert_eq!(status, 200, "{}", body.to_json());
        text(&body, "payload")
    }

    /// Gets the canonical payload for `fields` (a JSON object text), signs it, and posts the
    /// settlement to `path`.
    async fn post_settlement(&self, path: &str, fields: &str) -> (u16, JsValue) {
        let payload = self.settlement_payload(fields).await;
        let body = with_signature(fields, &payload, &self.sign(&payload));
        self.call(Method::POST, path, Some(&body)).await
    }

    /// Creates a connection to the plain partner; returns its id.
    async fn connection(&self, name: &str) -> String {
        let unsigned = format!(
            r#"{{"partnerId":"{PLAIN_PARTNER_ID}","name":"{name}","connectionKey":{{"schema":"apiKeyAndSecret","apiKey":"k-{name}","apiSecret":"s-{name}"}},"nonce":"nonce-{name}"}}"#
        );
        let body = with_signature(&unsigned, &unsigned, &self.sign(&unsigned));
        let (status, answer) = self
            .call(Method::POST, &v1("/clients/connections"), Some(&body))
            .await;
        assert_eq!(status, 201, "{}", answer.to_json());
        text(answer.get("connection").expect("connection"), "id")
    }
}

fn v1(suffix: &str) -> String {
    format!("/api/network/v1/enterprises/{EID}{suffix}")
}

fn v2(suffix: &str) -> String {
    format!("/api/network/v2/enterprises/{EID}{suffix}")
}

/// `fields` (a JSON object text) with `payload` and `signature` appended.
fn with_signature(fields: &str, payload: &str, signature: &str) -> String {
    let mut out = fields
        .trim_end()
        .strip_suffix('}')
        .expect("a JSON object")
        .to_string();
    let mut payload_json = String::new();
    js_json::write_json_str(&mut payload_json, payload);
    out.push_str(&format!(
        r#","payload":{payload_json},"signature":"{signature}"}}"#
    ));
    out
}

fn text(value: &JsValue, key: &str) -> String {
    value
        .get(key)
        .and_then(JsValue::as_str)
        .unwrap_or_else(|| panic!("no string {key} in {}", value.to_json()))
        .to_string()
}

const SETTLEMENT: &str = r#"{
  "externalId": "idForSettlementAtPartner",
  "notes": "this is a settlement note",
  "settlementAmounts": {
    "09684b38-49ed-4cf6-a28e-c3a459494c69": { "BTC": "100", "ETH": "-200" },
    "136c1c69-8654-484f-8c5f-591b334a084f": { "XRP": "300", "BTC": "-400" },
    "42": { "USD": "1.5" }
  },
  "nonce": "1"
}"#;

#[tokio::test]
async fn settlement_signing_returns_the_sandboxs_canonical_payload() {
    let net = Net::start().await;
    let payload = net.settlement_payload(SETTLEMENT).await;
    // V8 order: the array-index key "42" comes first; the sandbox's own field order, not the
    // request's; notes defaults to "" and cutoffAt only appears when given.
    assert_eq!(
        payload,
        format!(
            r#"{{"version":1,"type":"settlement","enterpriseId":"{EID}","externalId":"idForSettlementAtPartner","nonce":"1","notes":"this is a settlement note","settlementAmounts":{{"42":{{"USD":"1.5"}},"09684b38-49ed-4cf6-a28e-c3a459494c69":{{"BTC":"100","ETH":"-200"}},"136c1c69-8654-484f-8c5f-591b334a084f":{{"XRP":"300","BTC":"-400"}}}}}}"#
        )
    );
    // GET with a JSON body is the same; cutoffAt is appended when given; notes default to "".
    let (status, body) = net
        .call(
            Method::GET,
            &v1("/partners/settlements-signing"),
            Some(r#"{"externalId":"x","settlementAmounts":{"a":{"BTC":"1"}},"nonce":"n","cutoffAt":"2024-01-01T00:00:00Z"}"#),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        text(&body, "payload"),
        format!(
            r#"{{"version":1,"type":"settlement","enterpriseId":"{EID}","externalId":"x","nonce":"n","notes":"","settlementAmounts":{{"a":{{"BTC":"1"}}}},"cutoffAt":"2024-01-01T00:00:00Z"}}"#
        )
    );
    for (body, field) in [
        (
            r#"{"settlementAmounts":{"a":{"BTC":"1"}},"nonce":"n"}"#,
            "externalId",
        ),
        (r#"{"externalId":"x","nonce":"n"}"#, "settlementAmounts"),
        (
            r#"{"externalId":"x","settlementAmounts":{"a":{"BTC":"1"}}}"#,
            "nonce",
        ),
        (
            r#"{"externalId":"x","settlementAmounts":{"a":{"BTC":1}},"nonce":"n"}"#,
            "settlementAmounts",
        ),
    ] {
        let (status, answer) = net
            .call(
                Method::POST,
                &v1("/partners/settlements-signing"),
                Some(body),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(text(&answer, "name"), "ValidationError");
        assert!(
            text(&answer, "error").contains(field),
            "{}",
            answer.to_json()
        );
    }
    // Only the signing helper was used: nothing was created.
    assert_eq!(net.sandbox.create_count(), 0);
}

#[tokio::test]
async fn settlement_create_replay_and_conflict() {
    let net = Net::start().await;
    let (status, body) = net
        .post_settlement(&v1("/partners/settlements"), SETTLEMENT)
        .await;
    assert_eq!(status, 201, "{}", body.to_json());
    let settlement = body.get("settlement").expect("settlement").clone();
    assert_eq!(
        settlement
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.to_utf8_lossy().into_owned())
            .collect::<Vec<_>>(),
        [
            "id",
            "partnerId",
            "externalId",
            "cutoffAt",
            "reason",
            "status",
            "reconciled",
            "notes",
            "createdAt",
            "updatedAt"
        ]
    );
    let id = text(&settlement, "id");
    assert!(uuid::Uuid::parse_str(&id).is_ok_and(|u| u.get_version_num() == 4));
    assert_eq!(text(&settlement, "partnerId"), SETTLEMENT_PARTNER_ID);
    assert_eq!(text(&settlement, "externalId"), "idForSettlementAtPartner");
    assert_eq!(text(&settlement, "cutoffAt"), DEFAULT_CUTOFF_AT);
    assert_eq!(settlement.get("reason"), Some(&JsValue::Null));
    assert_eq!(text(&settlement, "status"), "completed");
    assert_eq!(settlement.get("reconciled"), Some(&JsValue::Bool(false)));
    assert_eq!(text(&settlement, "notes"), "this is a settlement note");
    assert!(text(&settlement, "createdAt").ends_with('Z'));
    assert_eq!(net.sandbox.create_count(), 1);

    // The identical request again: 200 with the existing settlement, nothing new created.
    let (status, again) = net
        .post_settlement(&v1("/partners/settlements"), SETTLEMENT)
        .await;
    assert_eq!(status, 200, "{}", again.to_json());
    assert_eq!(again.get("settlement"), Some(&settlement));
    assert_eq!(net.sandbox.create_count(), 1);
    assert_eq!(net.sandbox.settlements(), vec![settlement.clone()]);

    // Same externalId, different amounts (validly signed): 409.
    let changed = SETTLEMENT.replace(r#""XRP": "300""#, r#""XRP": "301""#);
    let (status, conflict) = net
        .post_settlement(&v1("/partners/settlements"), &changed)
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        conflict.to_json(),
        r#"{"error":"settlement with externalId idForSettlementAtPartner already exists","name":"DuplicateExternalId"}"#
    );
    assert_eq!(net.sandbox.create_count(), 1);

    // The list shows the one settlement.
    let (status, list) = net
        .call(Method::GET, &v1("/partners/settlements"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        list.get("settlements"),
        Some(&JsValue::Array(vec![settlement]))
    );
}

#[tokio::test]
async fn settlement_rejects_wrong_payloads_keys_and_v2_without_cutoff() {
    let net = Net::start().await;
    let path = v1("/partners/settlements");
    let canonical = net.settlement_payload(SETTLEMENT).await;

    // Signing the request's own compact JSON instead of the canonical payload.
    let own = js_json::parse(SETTLEMENT).expect("json").to_json();
    let body = with_signature(SETTLEMENT, &own, &net.sign(&own));
    let (status, answer) = net.call(Method::POST, &path, Some(&body)).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer.to_json(),
        r#"{"error":"payload does not match the settlement"}"#
    );

    // A tampered payload, even if validly signed.
    let tampered = canonical.replace(r#""BTC":"100""#, r#""BTC":"1000""#);
    assert_ne!(tampered, canonical);
    let body = with_signature(SETTLEMENT, &tampered, &net.sign(&tampered));
    let (status, answer) = net.call(Method::POST, &path, Some(&body)).await;
    assert_eq!(status, 400);
    assert_eq!(
        text(&answer, "error"),
        "payload does not match the settlement"
    );

    // The right payload signed by another key; then a signature over something else.
    let (other_key, _, _) = key_from_seed(OTHER_SEED);
    let body = with_signature(
        SETTLEMENT,
        &canonical,
        &sign_message_hex(&other_key, canonical.as_bytes()),
    );
    let (status, answer) = net.call(Method::POST, &path, Some(&body)).await;
    assert_eq!(status, 400);
    assert_eq!(answer.to_json(), r#"{"error":"invalid signature"}"#);
    let body = with_signature(SETTLEMENT, &canonical, &net.sign("something else"));
    let (status, answer) = net.call(Method::POST, &path, Some(&body)).await;
    assert_eq!(
        (status, text(&answer, "error").as_str()),
        (400, "invalid signature")
    );
    let body = with_signature(SETTLEMENT, &canonical, "abcd");
    let (status, _) = net.call(Method::POST, &path, Some(&body)).await;
    assert_eq!(status, 400);

    // Missing payload / signature.
    let (status, answer) = net.call(Method::POST, &path, Some(SETTLEMENT)).await;
    assert_eq!(status, 400);
    assert_eq!(text(&answer, "name"), "ValidationError");

    // v2 requires cutoffAt, even with a valid signature over the canonical payload.
    let (status, answer) = net
        .post_settlement(&v2("/partners/settlements"), SETTLEMENT)
        .await;
    assert_eq!(status, 400);
    assert_eq!(text(&answer, "name"), "ValidationError");
    assert!(text(&answer, "error").contains("cutoffAt"));
    assert_eq!(net.sandbox.create_count(), 0);
    assert!(net.sandbox.settlements().is_empty());

    // v2 with cutoffAt works and keeps it.
    let with_cutoff = SETTLEMENT.replace(
        r#""nonce": "1""#,
        r#""nonce": "1", "cutoffAt": "2024-05-07T00:00:00+0000""#,
    );
    let (status, answer) = net
        .post_settlement(&v2("/partners/settlements"), &with_cutoff)
        .await;
    assert_eq!(status, 201, "{}", answer.to_json());
    assert_eq!(
        text(answer.get("settlement").expect("settlement"), "cutoffAt"),
        "2024-05-07T00:00:00+0000"
    );
    assert_eq!(net.sandbox.create_count(), 1);
}

#[tokio::test]
async fn allocations_and_deallocations_round_trip() {
    let net = Net::start().await;
    let cid = net.connection("desk-a").await;
    let base = v1(&format!("/clients/connections/{cid}"));
    let fields = r#"{"amount":{"quantity":"2.5","currency":"ofctbtc"},"clientExternalId":"alloc-1","nonce":"n-1","notes":"first"}"#;

    let (status, answer) = net
        .call(
            Method::POST,
            &format!("{base}/allocations/signing"),
            Some(fields),
        )
        .await;
    assert_eq!(status, 200, "{}", answer.to_json());
    let payload = text(&answer, "payload");
    assert_eq!(
        payload,
        format!(
            r#"{{"version":1,"type":"allocation","enterpriseId":"{EID}","connectionId":"{cid}","clientExternalId":"alloc-1","nonce":"n-1","amount":{{"currency":"ofctbtc","quantity":"2.5"}},"notes":"first"}}"#
        )
    );
    let body = with_signature(fields, &payload, &net.sign(&payload));
    let (status, created) = net
        .call(Method::POST, &format!("{base}/allocations"), Some(&body))
        .await;
    assert_eq!(status, 201, "{}", created.to_json());
    let allocation = created.get("allocation").expect("allocation").clone();
    assert_eq!(text(&allocation, "connectionId"), cid);
    assert_eq!(text(&allocation, "clientExternalId"), "alloc-1");
    assert_eq!(text(&allocation, "status"), "created");
    assert_eq!(text(&allocation, "notes"), "first");
    assert_eq!(
        allocation.get("amount").map(JsValue::to_json).as_deref(),
        Some(r#"{"currency":"ofctbtc","quantity":"2.5"}"#)
    );
    let count = net.sandbox.create_count(); // the connection + the allocation
    assert_eq!(count, 2);

    // Replay → 200, same allocation; a different amount with the same id → 409.
    let (status, again) = net
        .call(Method::POST, &format!("{base}/allocations"), Some(&body))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again.get("allocation"), Some(&allocation));
    let changed = fields.replace("2.5", "3");
    let (_, answer) = net
        .call(
            Method::POST,
            &format!("{base}/allocations/signing"),
            Some(&changed),
        )
        .await;
    let changed_payload = text(&answer, "payload");
    let body = with_signature(&changed, &changed_payload, &net.sign(&changed_payload));
    let (status, answer) = net
        .call(Method::POST, &format!("{base}/allocations"), Some(&body))
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        answer.to_json(),
        r#"{"error":"allocation with clientExternalId alloc-1 already exists","name":"DuplicateExternalId"}"#
    );
    assert_eq!(net.sandbox.create_count(), count);

    // An allocation payload does not pass as a deallocation.
    let body = with_signature(fields, &payload, &net.sign(&payload));
    let (status, answer) = net
        .call(Method::POST, &format!("{base}/deallocations"), Some(&body))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        answer.to_json(),
        r#"{"error":"payload does not match the deallocation"}"#
    );

    // Deallocation round trip.
    let fields = r#"{"amount":{"currency":"ofctbtc","quantity":"1"},"clientExternalId":"dealloc-1","nonce":"n-2"}"#;
    let (_, answer) = net
        .call(
            Method::POST,
            &format!("{base}/deallocations/signing"),
            Some(fields),
        )
        .await;
    let payload = text(&answer, "payload");
    assert_eq!(
        payload,
        format!(
            r#"{{"version":1,"type":"deallocation","enterpriseId":"{EID}","connectionId":"{cid}","clientExternalId":"dealloc-1","nonce":"n-2","amount":{{"currency":"ofctbtc","quantity":"1"}},"notes":""}}"#
        )
    );
    let body = with_signature(fields, &payload, &net.sign(&payload));
    let (status, created) = net
        .call(Method::POST, &format!("{base}/deallocations"), Some(&body))
        .await;
    assert_eq!(status, 201, "{}", created.to_json());
    let deallocation = created.get("deallocation").expect("deallocation").clone();
    assert_eq!(text(&deallocation, "clientExternalId"), "dealloc-1");
    assert_eq!(text(&deallocation, "status"), "created");
    assert_eq!(net.sandbox.create_count(), count + 1);
    assert_eq!(net.sandbox.allocations(), vec![allocation, deallocation]);

    // Wrong key; unknown connection; bad quantity.
    let (other_key, _, _) = key_from_seed(OTHER_SEED);
    let fields = r#"{"amount":{"currency":"ofctbtc","quantity":"1"},"clientExternalId":"alloc-2","nonce":"n-3"}"#;
    let (_, answer) = net
        .call(
            Method::POST,
            &format!("{base}/allocations/signing"),
            Some(fields),
        )
        .await;
    let payload = text(&answer, "payload");
    let body = with_signature(
        fields,
        &payload,
        &sign_message_hex(&other_key, payload.as_bytes()),
    );
    let (status, answer) = net
        .call(Method::POST, &format!("{base}/allocations"), Some(&body))
        .await;
    assert_eq!(
        (status, answer.to_json().as_str()),
        (400, r#"{"error":"invalid signature"}"#)
    );
    let (status, _) = net
        .call(
            Method::POST,
            &v1("/clients/connections/no-such-connection/allocations/signing"),
            Some(fields),
        )
        .await;
    assert_eq!(status, 404);
    let (status, answer) = net
        .call(
            Method::POST,
            &format!("{base}/allocations/signing"),
            Some(r#"{"amount":{"currency":"ofctbtc","quantity":"-1"},"clientExternalId":"a","nonce":"n"}"#),
        )
        .await;
    assert_eq!(
        (status, text(&answer, "name").as_str()),
        (400, "ValidationError")
    );
    assert_eq!(net.sandbox.create_count(), count + 1);
}

#[tokio::test]
async fn connection_signature_covers_the_v8_stringify_of_the_body() {
    let net = Net::start().await;
    let path = v1("/clients/connections");
    let token = "Rk9PQkFS\nAQIDBAUGBwgJCgsMDQ4PEA==";
    // The body as a client writes it; V8's JSON.parse puts the array-index key "10" first.
    let unsigned = format!(
        r#"{{"partnerId":"{PARTNER_ID}","name":"Main","connectionKey":{{"schema":"token","connectionToken":"{}"}},"nonce":"c-1","encrypt":true,"metadata":{{"b":1,"10":"ten","a":2.50}}}}"#,
        token.replace('\n', "\\n")
    );
    let v8 = format!(
        r#"{{"partnerId":"{PARTNER_ID}","name":"Main","connectionKey":{{"schema":"token","connectionToken":"{}"}},"nonce":"c-1","encrypt":true,"metadata":{{"10":"ten","b":1,"a":2.5}}}}"#,
        token.replace('\n', "\\n")
    );

    // Signing the text as written is not what BitGo checks.
    let body = with_signature(&unsigned, &unsigned, &net.sign(&unsigned));
    let (status, answer) = net.call(Method::POST, &path, Some(&body)).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer.to_json(),
        r#"{"error":"payload does not match the connection"}"#
    );

    // The V8 stringify, signed by another key, is rejected; by the trading account, accepted.
    let (other_key, _, _) = key_from_seed(OTHER_SEED);
    let body = with_signature(&unsigned, &v8, &sign_message_hex(&other_key, v8.as_bytes()));
    let (status, answer) = net.call(Method::POST, &path, Some(&body)).await;
    assert_eq!(
        (status, answer.to_json().as_str()),
        (400, r#"{"error":"invalid signature"}"#)
    );
    assert_eq!(net.sandbox.create_count(), 0);

    let body = with_signature(&unsigned, &v8, &net.sign(&v8));
    let (status, answer) = net.call(Method::POST, &path, Some(&body)).await;
    assert_eq!(status, 201, "{}", answer.to_json());
    let connection = answer.get("connection").expect("connection");
    assert!(uuid::Uuid::parse_str(&text(connection, "id")).is_ok());
    assert_eq!(text(connection, "partnerId"), PARTNER_ID);
    assert_eq!(text(connection, "name"), "Main");
    assert_eq!(connection.get("active"), Some(&JsValue::Bool(true)));
    assert_eq!(net.sandbox.create_count(), 1);
    // Stored as received: the connection key fields are what the client sent.
    let stored = net.sandbox.connections();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0], js_json::parse(&body).expect("json"));
    assert_eq!(
        stored[0]
            .get("connectionKey")
            .and_then(|k| k.get("connectionToken"))
            .and_then(JsValue::as_str),
        Some(token)
    );

    // Unknown partner; wrong schema for the partner; missing schema field.
    for (body, name) in [
        (
            r#"{"partnerId":"nope","name":"x","connectionKey":{"schema":"token","connectionToken":"t"},"nonce":"n"}"#,
            "PartnerNotFound",
        ),
        (
            &*format!(
                r#"{{"partnerId":"{PARTNER_ID}","name":"x","connectionKey":{{"schema":"apiKeyAndSecret","apiKey":"k","apiSecret":"s"}},"nonce":"n"}}"#
            ),
            "ValidationError",
        ),
        (
            &*format!(
                r#"{{"partnerId":"{PLAIN_PARTNER_ID}","name":"x","connectionKey":{{"schema":"apiKeyAndSecret","apiKey":"k"}},"nonce":"n"}}"#
            ),
            "ValidationError",
        ),
    ] {
        let signed = with_signature(body, body, &net.sign(body));
        let (status, answer) = net.call(Method::POST, &path, Some(&signed)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(text(&answer, "name"), name, "{}", answer.to_json());
    }
    assert_eq!(net.sandbox.create_count(), 1);
}

#[tokio::test]
async fn partners_list_and_filters() {
    let net = Net::start().await;
    let ids = |answer: &JsValue| -> Vec<String> {
        answer
            .get("partners")
            .and_then(JsValue::as_array)
            .expect("partners")
            .iter()
            .map(|p| text(p, "id"))
            .collect()
    };
    let (status, all) = net.call(Method::GET, &v1("/partners"), None).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all), [PARTNER_ID, PLAIN_PARTNER_ID]);
    let partners = all
        .get("partners")
        .and_then(JsValue::as_array)
        .expect("partners");
    let first = &partners[0];
    assert_eq!(text(first, "name"), "Encrypting Exchange");
    assert_eq!(text(first, "connectionKeySchema"), "token");
    assert_eq!(text(first, "publicKey"), PARTNER_PEM);
    assert_eq!(first.get("active"), Some(&JsValue::Bool(true)));
    assert!(!text(first, "institutionId").is_empty());
    assert!(!text(first, "institutionIdentifier").is_empty());
    assert!(partners[1].get("publicKey").is_none());
    assert_eq!(text(&partners[1], "connectionKeySchema"), "apiKeyAndSecret");

    // JSON body filter (what the SDK sends on GET), query filter, and Express' `[null]`.
    let (_, filtered) = net
        .call(
            Method::GET,
            &v1("/partners"),
            Some(&format!(r#"{{"ids":["{PLAIN_PARTNER_ID}"]}}"#)),
        )
        .await;
    assert_eq!(ids(&filtered), [PLAIN_PARTNER_ID]);
    let (_, filtered) = net
        .call(
            Method::GET,
            &v1(&format!("/partners?ids={PARTNER_ID}")),
            None,
        )
        .await;
    assert_eq!(ids(&filtered), [PARTNER_ID]);
    let (_, filtered) = net
        .call(Method::GET, &v1("/partners"), Some(r#"{"ids":[null]}"#))
        .await;
    assert!(ids(&filtered).is_empty());
}

#[tokio::test]
async fn authentication_enterprise_header_faults_and_recording() {
    let net = Net::start().await;
    let path = v1("/partners");

    // enterprise-id: missing, or different from the path's.
    let (status, answer) = net
        .call_as(Method::GET, &path, None, None, Some(&net.token))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        answer.to_json(),
        r#"{"error":"enterprise-id header must match the path"}"#
    );
    let (status, _) = net
        .call_as(
            Method::GET,
            &path,
            None,
            Some("someoneelse"),
            Some(&net.token),
        )
        .await;
    assert_eq!(status, 400);
    // The header check applies to creations too.
    let (status, _) = net
        .call_as(
            Method::POST,
            &v1("/partners/settlements-signing"),
            Some(SETTLEMENT),
            None,
            Some(&net.token),
        )
        .await;
    assert_eq!(status, 400);

    // Anonymous → 401; a legacy token works; an unknown enterprise → 404.
    let (status, _) = net.call_as(Method::GET, &path, None, Some(EID), None).await;
    assert_eq!(status, 401);
    let legacy = AccessToken::new(LEGACY_TOKEN);
    let (status, _) = net
        .call_as(Method::GET, &path, None, Some(EID), Some(&legacy))
        .await;
    assert_eq!(status, 200);
    let other = "/api/network/v1/enterprises/unknownenterprise/partners";
    let (status, _) = net
        .call_as(
            Method::GET,
            other,
            None,
            Some("unknownenterprise"),
            Some(&net.token),
        )
        .await;
    assert_eq!(status, 404);

    // Requests are recorded with their enterprise-id header.
    let recorded = net.sandbox.requests();
    let last = recorded.last().expect("recorded");
    assert_eq!(last.path, other);
    assert_eq!(
        last.headers
            .get("enterprise-id")
            .and_then(|v| v.to_str().ok()),
        Some("unknownenterprise")
    );

    // Responses are HMAC-signed: a corrupted response HMAC is caught by the client.
    net.sandbox.set_fault(Some(Fault::CorruptResponseHmac));
    let request = UpstreamRequest::new(Method::GET, &path)
        .token(Some(&net.token))
        .header(
            HeaderName::from_static("enterprise-id"),
            HeaderValue::from_static(EID),
        );
    let error = net.client.exchange(&request).await.expect_err("bad HMAC");
    assert_ne!(error.status, StatusCode::OK);
    // A forced answer applies to these routes too.
    net.sandbox.set_fault(Some(Fault::Respond {
        status: 503,
        content_type: "application/json".to_string(),
        body: r#"{"error":"down"}"#.to_string(),
    }));
    let (status, _) = net.call(Method::GET, &path, None).await;
    assert_eq!(status, 503);
    net.sandbox.set_fault(None);
    let (status, _) = net.call(Method::GET, &path, None).await;
    assert_eq!(status, 200);
}
