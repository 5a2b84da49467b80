//! Tests of the signed-command verification: RFC 8032 vectors, envelopes, refusals, replay, expiry.

use super::*;
use ed25519_dalek::{Signer, SigningKey};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    hex(s).try_into().unwrap()
}

// RFC 8032 section 7.1 (Ed25519): (secret key, public key, message, signature).
const RFC8032_1: [&str; 4] = [
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    "",
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
];
const RFC8032_2: [&str; 4] = [
    "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
    "72",
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
];
const RFC8032_3: [&str; 4] = [
    "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
    "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
    "af82",
    "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
];
const RFC8032_1024: [&str; 4] = [
    "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
    "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
    concat!(
        "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1e355f6c50544e2",
        "3fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d658675fc6ea534e0810a4432826b",
        "f58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a7363c344fe6b199ee5d02e82d522c4feba15452f80",
        "288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573c",
        "b116dbefefd75499da96bd68a8a97b928a8bbc103b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af",
        "2b74ef5c53f1d8ac70bdcb7ed185ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a",
        "2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f27088",
        "d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2",
        "cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128bab27af87a71314f318c782b23ebfe80",
        "8b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429ec96031dbcad3",
        "dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb751fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e229",
        "04cc8c42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f672451",
        "7b65e614ad6808d6f6ee34dff7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040c",
        "f9bfd4aca7984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e488ac",
        "ba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac0943bf6686b64b257937",
        "6504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5fb93246f6b1116398a346f1a641f3b041",
        "e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f1610e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a",
        "45a96768d40fd9d03412c091c6315cf4fde7cb68606937380db2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86ab",
        "a41c0618983f8741c5ef68d3a101e8a3b8cac60c905c15fc910840b94c00a0b9d0",
    ),
    "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03",
];
const VECTORS: [[&str; 4]; 4] = [RFC8032_1, RFC8032_2, RFC8032_3, RFC8032_1024];

/// A command envelope signed by Python's `cryptography` package (OpenSSL), with RFC 8032 TEST 1's secret key,
/// made by `echo nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A= > k; tools/sign-command.py --key k --id py-0001
/// --issued-at 2026-11-26T03:10:00Z lighting.override '{"zone": "reiherhagen", "level_pct": 80, "duration_s": 600}'`.
/// Ed25519 signatures are deterministic, so this is a fixed vector from an independent implementation.
const PY_PAYLOAD: &str = r#"{"id":"py-0001","cmd":"lighting.override","args":{"zone":"reiherhagen","level_pct":80,"duration_s":600},"issued_at":"2026-11-26T03:10:00Z","expires_at":"2026-11-26T03:15:00Z"}"#;
const PY_SIG_B64: &str = "aIu3/phyRwhcg8xN+ILNCgFFItsu49c2mWGNJuIKtKzBvkSbtc5txQX8USJ8xuuspKD45y1L2lkUUY7FzcsZAg==";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn now() -> DateTime<Utc> {
    t("2026-11-26T03:11:00Z")
}

fn test_key() -> SigningKey {
    SigningKey::from_bytes(&arr(RFC8032_1[0]))
}

fn verifier() -> Verifier {
    let other = SigningKey::from_bytes(&arr(RFC8032_2[0]));
    Verifier::new(
        vec![
            ("ops-1".into(), test_key().verifying_key().to_bytes()),
            ("ops-2".into(), other.verifying_key().to_bytes()),
        ],
        DEFAULT_SKEW,
        DEFAULT_MAX_VALIDITY,
    )
    .unwrap()
}

fn envelope(key_id: &str, key: &SigningKey, payload: &[u8]) -> Vec<u8> {
    let sig = key.sign(payload);
    json!({"key_id": key_id, "payload": b64(payload), "sig": b64(&sig.to_bytes())}).to_string().into_bytes()
}

fn command(id: &str, cmd: &str, args: Value, issued: &str, expires: &str) -> Vec<u8> {
    json!({"id": id, "cmd": cmd, "args": args, "issued_at": issued, "expires_at": expires}).to_string().into_bytes()
}

fn ok_cmd(id: &str) -> Vec<u8> {
    command(id, "status", json!({}), "2026-11-26T03:10:00Z", "2026-11-26T03:15:00Z")
}

fn code(r: Result<Command, Refusal>) -> RefusalCode {
    r.unwrap_err().code
}

#[test]
fn dalek_reproduces_rfc8032_vectors() {
    for [sk, pk, msg, sig] in VECTORS {
        let key = SigningKey::from_bytes(&arr(sk));
        assert_eq!(key.verifying_key().to_bytes(), arr::<32>(pk));
        let msg = hex(msg);
        assert_eq!(key.sign(&msg).to_bytes(), arr::<64>(sig));
    }
}

#[test]
fn verifier_accepts_rfc8032_signatures() {
    // The vectors' messages are not command JSON, so the verifier gets past the signature check and stops at
    // parsing (malformed); one flipped bit in the signature or the message stops it at the signature.
    for [_, pk, msg, sig] in VECTORS {
        let mut v = Verifier::new(vec![("rfc".into(), arr(pk))], DEFAULT_SKEW, DEFAULT_MAX_VALIDITY).unwrap();
        let msg = hex(msg);
        let sig = hex(sig);
        let env =
            |m: &[u8], s: &[u8]| json!({"key_id": "rfc", "payload": b64(m), "sig": b64(s)}).to_string().into_bytes();
        let r = v.verify(now(), &env(&msg, &sig)).unwrap_err();
        assert_eq!(r.code, RefusalCode::Malformed, "{r}");
        assert!(r.message.starts_with("payload is not a command JSON object"), "{r}");
        let mut bad = sig.clone();
        bad[10] ^= 0x04;
        assert_eq!(code(v.verify(now(), &env(&msg, &bad))), RefusalCode::BadSignature);
        let mut bad_msg = msg.clone();
        bad_msg.push(0);
        assert_eq!(code(v.verify(now(), &env(&bad_msg, &sig))), RefusalCode::BadSignature);
        assert_eq!(v.seen_len(), 0);
    }
}

#[test]
fn accepts_command_signed_by_independent_implementation() {
    let env =
        json!({"key_id": "ops-1", "payload": b64(PY_PAYLOAD.as_bytes()), "sig": PY_SIG_B64}).to_string().into_bytes();
    let mut v = verifier();
    let c = v.verify(now(), &env).unwrap();
    assert_eq!(c.id, "py-0001");
    assert_eq!(c.key_id, "ops-1");
    assert_eq!(c.cmd, CommandName::LightingOverride);
    let a: LightingOverrideArgs = c.args_as().unwrap();
    assert_eq!(a, LightingOverrideArgs { zone: "reiherhagen".into(), level_pct: 80, duration_s: 600 });
    assert_eq!(c.forget_after, t("2026-11-26T03:16:00Z"));
    // Our own signer produces the same bytes (deterministic Ed25519).
    let ours = test_key().sign(PY_PAYLOAD.as_bytes());
    assert_eq!(b64(&ours.to_bytes()), PY_SIG_B64);
    assert_eq!(code(v.verify(now(), &env)), RefusalCode::Replayed);
}

/// When python3 with `cryptography` is installed, sign a fresh command with the shipped script too
/// (required when `CI` is set: see `crate::test_support::require`).
#[test]
fn sign_command_script_when_available() {
    let what = "python3 with the `cryptography` package (for tools/sign-command.py)";
    let hint = "apt-get install -y python3-cryptography";
    if !crate::test_support::require(what, hint, crate::test_support::python_has("cryptography")) {
        return;
    }
    let root = crate::test_support::repo_root();
    let script = root.join("tools/sign-command.py");
    let dir = std::env::temp_dir().join(format!("sign-command-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("ops-1.key");
    std::fs::write(&key_file, format!("{}\n", b64(&arr::<32>(RFC8032_1[0])))).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["--key", key_file.to_str().unwrap(), "--key-id", "ops-1", "--id", "script-1"])
        .args(["--issued-at", "2026-11-26T03:10:00Z", "--valid-for", "300", "--gateway", "garstedt-01"])
        .args(["lighting.override", r#"{"zone": "z", "level_pct": 5, "duration_s": 60}"#])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.expect("python3 runs (it imported cryptography a moment ago)");
    assert!(out.status.success(), "sign-command.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut v = verifier().with_gateway_id("garstedt-01");
    let c = v.verify(now(), &out.stdout).unwrap();
    assert_eq!((c.id.as_str(), c.cmd), ("script-1", CommandName::LightingOverride));
    assert_eq!(c.expires_at, t("2026-11-26T03:15:00Z"));
    let mut other = verifier().with_gateway_id("elsewhere-02");
    assert_eq!(code(other.verify(now(), &out.stdout)), RefusalCode::WrongGateway);
}

#[test]
fn accepts_and_refuses_replay() {
    let mut v = verifier();
    let env = envelope("ops-1", &test_key(), &ok_cmd("c-1"));
    let c = v.verify(now(), &env).unwrap();
    assert_eq!((c.id.as_str(), c.cmd, &c.args), ("c-1", CommandName::Status, &json!({})));
    let r = v.verify(now(), &env).unwrap_err();
    assert_eq!((r.code, r.id.as_deref()), (RefusalCode::Replayed, Some("c-1")));
    // The second key works too; ids are global, not per key.
    let env2 = envelope("ops-2", &SigningKey::from_bytes(&arr(RFC8032_2[0])), &ok_cmd("c-1"));
    assert_eq!(code(v.verify(now(), &env2)), RefusalCode::Replayed);
    assert_eq!(v.seen_ids(), vec![("c-1".to_owned(), t("2026-11-26T03:16:00Z"))]);
}

#[test]
fn every_refusal_code_and_nothing_changes() {
    let mut v = verifier();
    v.verify(now(), &envelope("ops-1", &test_key(), &ok_cmd("before"))).unwrap();
    let seen_before = v.seen_ids();
    let key = test_key();
    let good = ok_cmd("x-1");

    let tampered = {
        let env: Value = serde_json::from_slice(&envelope("ops-1", &key, &good)).unwrap();
        let mut payload = good.clone();
        let pos = payload.windows(6).position(|w| w == b"status").unwrap();
        payload[pos..pos + 6].copy_from_slice(b"config");
        json!({"key_id": "ops-1", "payload": b64(&payload), "sig": env["sig"]}).to_string().into_bytes()
    };
    let wrong_key = envelope("ops-2", &key, &good);
    let cases: Vec<(&str, Vec<u8>, RefusalCode, Option<&str>)> = vec![
        ("garbage", b"not json {".to_vec(), RefusalCode::Malformed, None),
        ("empty", Vec::new(), RefusalCode::Malformed, None),
        ("array", b"[1,2]".to_vec(), RefusalCode::Malformed, None),
        ("missing sig", br#"{"key_id":"ops-1","payload":"e30="}"#.to_vec(), RefusalCode::Malformed, None),
        ("bad base64", br#"{"key_id":"ops-1","payload":"!!","sig":"AA=="}"#.to_vec(), RefusalCode::Malformed, None),
        (
            "short sig",
            json!({"key_id": "ops-1", "payload": b64(&good), "sig": b64(&[0; 63])}).to_string().into_bytes(),
            RefusalCode::Malformed,
            Some("x-1"),
        ),
        ("unknown key", envelope("ops-9", &key, &good), RefusalCode::UnknownKey, Some("x-1")),
        ("tampered", tampered, RefusalCode::BadSignature, Some("x-1")),
        ("wrong key", wrong_key, RefusalCode::BadSignature, Some("x-1")),
        ("signed garbage", envelope("ops-1", &key, b"{\"id\": 1"), RefusalCode::Malformed, None),
        (
            "no id",
            envelope(
                "ops-1",
                &key,
                br#"{"cmd":"ping","issued_at":"2026-11-26T03:10:00Z","expires_at":"2026-11-26T03:15:00Z"}"#,
            ),
            RefusalCode::Malformed,
            None,
        ),
        (
            "bad time",
            envelope("ops-1", &key, &command("x-1", "ping", json!({}), "yesterday", "2026-11-26T03:15:00Z")),
            RefusalCode::Malformed,
            Some("x-1"),
        ),
        (
            "inverted window",
            envelope("ops-1", &key, &command("x-1", "ping", json!({}), "2026-11-26T03:15:00Z", "2026-11-26T03:10:00Z")),
            RefusalCode::Malformed,
            Some("x-1"),
        ),
        (
            "expired",
            envelope("ops-1", &key, &command("x-1", "ping", json!({}), "2026-11-26T03:00:00Z", "2026-11-26T03:09:59Z")),
            RefusalCode::Expired,
            Some("x-1"),
        ),
        (
            "future",
            envelope("ops-1", &key, &command("x-1", "ping", json!({}), "2026-11-26T03:12:01Z", "2026-11-26T03:20:00Z")),
            RefusalCode::Expired,
            Some("x-1"),
        ),
        (
            "too long a window",
            envelope("ops-1", &key, &command("x-1", "ping", json!({}), "2026-11-26T03:10:00Z", "2026-11-27T03:10:01Z")),
            RefusalCode::Expired,
            Some("x-1"),
        ),
        ("replayed", envelope("ops-1", &key, &ok_cmd("before")), RefusalCode::Replayed, Some("before")),
        (
            "unknown command",
            envelope(
                "ops-1",
                &key,
                &command("x-1", "reboot", json!({}), "2026-11-26T03:10:00Z", "2026-11-26T03:15:00Z"),
            ),
            RefusalCode::UnknownCommand,
            Some("x-1"),
        ),
        (
            "args not an object",
            envelope(
                "ops-1",
                &key,
                &command("x-1", "ping", json!([1]), "2026-11-26T03:10:00Z", "2026-11-26T03:15:00Z"),
            ),
            RefusalCode::InvalidArgs,
            Some("x-1"),
        ),
        (
            "override without zone",
            envelope(
                "ops-1",
                &key,
                &command(
                    "x-1",
                    "lighting.override",
                    json!({"level_pct": 5, "duration_s": 10}),
                    "2026-11-26T03:10:00Z",
                    "2026-11-26T03:15:00Z",
                ),
            ),
            RefusalCode::InvalidArgs,
            Some("x-1"),
        ),
        (
            "override level 101",
            envelope(
                "ops-1",
                &key,
                &command(
                    "x-1",
                    "lighting.override",
                    json!({"zone": "z", "level_pct": 101, "duration_s": 10}),
                    "2026-11-26T03:10:00Z",
                    "2026-11-26T03:15:00Z",
                ),
            ),
            RefusalCode::InvalidArgs,
            Some("x-1"),
        ),
        (
            "config.apply without toml",
            envelope(
                "ops-1",
                &key,
                &command("x-1", "config.apply", json!({"tom": "x"}), "2026-11-26T03:10:00Z", "2026-11-26T03:15:00Z"),
            ),
            RefusalCode::InvalidArgs,
            Some("x-1"),
        ),
    ];
    for (name, env, want, id) in cases {
        let r = v.verify(now(), &env).unwrap_err();
        assert_eq!(r.code, want, "{name}: {r}");
        assert_eq!(r.id.as_deref(), id, "{name}: {r}");
        assert!(!r.message.is_empty());
        let res: Value = serde_json::from_slice(&r.to_response()).unwrap();
        assert_eq!(res["ok"], json!(false));
        assert_eq!(res["error"]["code"], json!(want.as_str()));
        assert_eq!(v.seen_ids(), seen_before, "{name} changed the seen set");
    }
    // After all those refusals the good command still goes through, exactly once.
    v.verify(now(), &envelope("ops-1", &key, &good)).unwrap();
    assert_eq!(code(v.verify(now(), &envelope("ops-1", &key, &good))), RefusalCode::Replayed);
}

#[test]
fn time_window_edges_with_skew() {
    let key = test_key();
    let mut v = verifier();
    let issued = "2026-11-26T03:12:00Z";
    let cmd = command("edge-1", "ping", json!({}), issued, "2026-11-26T03:20:00Z");
    // 60 s skew: a command issued 60 s ahead of our clock is accepted, 61 s is not.
    assert_eq!(code(v.verify(t("2026-11-26T03:10:59Z"), &envelope("ops-1", &key, &cmd))), RefusalCode::Expired);
    v.verify(t("2026-11-26T03:11:00Z"), &envelope("ops-1", &key, &cmd)).unwrap();
    let cmd = command("edge-2", "ping", json!({}), "2026-11-26T03:00:00Z", "2026-11-26T03:10:00Z");
    v.verify(t("2026-11-26T03:11:00Z"), &envelope("ops-1", &key, &cmd)).unwrap();
    let cmd = command("edge-3", "ping", json!({}), "2026-11-26T03:00:00Z", "2026-11-26T03:10:00Z");
    let r = v.verify(t("2026-11-26T03:11:01Z"), &envelope("ops-1", &key, &cmd)).unwrap_err();
    assert_eq!(r.code, RefusalCode::Expired);
    assert_eq!(r.message, "expired 61 s ago");
}

#[test]
fn replay_refused_after_restart() {
    let key = test_key();
    let env = envelope("ops-1", &key, &ok_cmd("r-1"));
    let mut v = verifier();
    v.verify(now(), &env).unwrap();
    let persisted: Vec<(String, String)> = v.seen_ids().into_iter().map(|(id, t)| (id, t.to_rfc3339())).collect();
    let persisted = serde_json::to_string(&persisted).unwrap();

    let mut restarted = verifier();
    let loaded: Vec<(String, String)> = serde_json::from_str(&persisted).unwrap();
    restarted.load_seen(now(), loaded.into_iter().map(|(id, ts)| (id, t(&ts))));
    assert_eq!(code(restarted.verify(now(), &env)), RefusalCode::Replayed);
    // Entries already past their time are not loaded.
    let mut late = verifier();
    late.load_seen(t("2026-11-26T03:16:01Z"), vec![("r-1".to_owned(), t("2026-11-26T03:16:00Z"))]);
    assert_eq!(late.seen_len(), 0);
}

#[test]
fn pruning_keeps_the_set_bounded() {
    let key = test_key();
    let mut v = verifier();
    let start = t("2026-11-26T00:00:00Z");
    // One command a minute, each valid for 5 minutes, for 10 hours.
    for i in 0..600 {
        let issued = start + TimeDelta::minutes(i);
        let cmd = command(
            &format!("p-{i}"),
            "ping",
            json!({}),
            &issued.to_rfc3339(),
            &(issued + TimeDelta::minutes(5)).to_rfc3339(),
        );
        v.verify(issued, &envelope("ops-1", &key, &cmd)).unwrap();
        assert!(v.seen_len() <= 7, "{} ids remembered at step {i}", v.seen_len());
    }
    // The forgotten ones are refused by the clock instead.
    let old = command("p-0", "ping", json!({}), &start.to_rfc3339(), &(start + TimeDelta::minutes(5)).to_rfc3339());
    assert_eq!(code(v.verify(start + TimeDelta::hours(10), &envelope("ops-1", &key, &old))), RefusalCode::Expired);
    let remembered = v.seen_len();
    assert!(remembered > 0);
    assert_eq!(v.prune(start + TimeDelta::hours(11)), remembered);
    assert_eq!(v.seen_len(), 0);
}

#[test]
fn wrong_gateway_only_when_named() {
    let key = test_key();
    let mut v = verifier().with_gateway_id("garstedt-01");
    let mk = |id: &str, gw: Option<&str>| {
        let mut c: Value = serde_json::from_slice(&ok_cmd(id)).unwrap();
        if let Some(gw) = gw {
            c["gateway"] = json!(gw);
        }
        envelope("ops-1", &key, c.to_string().as_bytes())
    };
    v.verify(now(), &mk("g-1", Some("garstedt-01"))).unwrap();
    v.verify(now(), &mk("g-2", None)).unwrap();
    assert_eq!(code(v.verify(now(), &mk("g-3", Some("harksheide-02")))), RefusalCode::WrongGateway);
    assert_eq!(v.seen_len(), 2);
}

#[test]
fn bad_keys_refused_at_construction() {
    // The identity point has small order: refused as weak.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(matches!(
        Verifier::new(vec![("k".into(), identity)], DEFAULT_SKEW, DEFAULT_MAX_VALIDITY),
        Err(VerifierError::BadKey(_))
    ));
    let pk = arr::<32>(RFC8032_1[1]);
    assert!(matches!(
        Verifier::new(vec![("k".into(), pk), ("k".into(), pk)], DEFAULT_SKEW, DEFAULT_MAX_VALIDITY),
        Err(VerifierError::DuplicateKey(_))
    ));
}

#[test]
fn responses_match_product_md() {
    let ok: Value = serde_json::from_slice(&response_ok("a", json!({"pong": true}))).unwrap();
    assert_eq!(ok, json!({"id": "a", "ok": true, "result": {"pong": true}}));
    let err: Value = serde_json::from_slice(&response_err(None, RefusalCode::Malformed, "m")).unwrap();
    assert_eq!(err, json!({"id": null, "ok": false, "error": {"code": "malformed", "message": "m"}}));
    for code in RefusalCode::ALL {
        assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
    }
    for name in CommandName::ALL {
        assert_eq!(CommandName::parse(name.as_str()), Some(*name));
    }
    assert_eq!(CommandName::ALL.len(), 12);
}

#[test]
fn messages_do_not_echo_argument_values() {
    let key = test_key();
    let mut v = verifier();
    let secret = "000102030405060708090a0b0c0d0e0f";
    let cmd = command(
        "s-1",
        "lighting.override",
        json!({"zone": "z", "level_pct": secret, "duration_s": 1}),
        "2026-11-26T03:10:00Z",
        "2026-11-26T03:15:00Z",
    );
    let r = v.verify(now(), &envelope("ops-1", &key, &cmd)).unwrap_err();
    assert_eq!(r.code, RefusalCode::InvalidArgs);
    assert!(!r.message.contains(secret), "{}", r.message);
    assert!(r.message.contains("level_pct") || r.message.contains("u8"), "{}", r.message);
    assert_eq!(redact_quoted(r#"invalid type: string "abc", expected u8"#), r#"invalid type: string "…", expected u8"#);
}

#[test]
fn command_counts() {
    let c = CommandCounts::default();
    c.record(Ok(()));
    c.record(Err(RefusalCode::Replayed));
    c.record(Err(RefusalCode::Replayed));
    let s = c.snapshot();
    assert_eq!(s.len(), 1 + RefusalCode::ALL.len());
    assert!(s.contains(&("ok", 1)) && s.contains(&("replayed", 2)) && s.contains(&("expired", 0)));
}
