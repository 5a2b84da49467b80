//! `district-gateway decode ...`: the operator's decoders on the command line. `decode wmbus` decrypts and
//! decodes one wireless M-Bus telegram; `decode lorawan` decodes one device payload with a profile (when a
//! new device type arrives). One JSON object on stdout and exit 0, or a clear error on stderr and exit 1
//! (2 for unusable arguments). A key never appears in any output.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use serde_json::{json, Value};

use district_core::wmbus;
use district_gateway::decode;

#[derive(Subcommand)]
pub enum DecodeCommand {
    /// Decrypt and decode one wireless M-Bus telegram (hex, L-field first, with or without block CRCs).
    Wmbus {
        /// The meter's AES-128 key (32 hex digits), for encrypted telegrams (security mode 5).
        #[arg(long, value_name = "HEX")]
        key: Option<String>,
        #[arg(value_name = "TELEGRAM_HEX")]
        telegram: String,
    },
    /// Decode one LoRaWAN application payload (the decrypted FRMPayload, hex) with a device profile.
    Lorawan {
        /// A native profile (e.g. milesight-em310-udl) or js:PATH (a TTN codec file, path from here).
        #[arg(long, value_name = "P")]
        profile: String,
        /// The FPort the payload came on.
        #[arg(long, value_name = "N")]
        port: u8,
        #[arg(value_name = "HEX")]
        payload: String,
    },
}

/// Runs the decode command: prints the JSON object, or the error.
pub fn run(cmd: DecodeCommand) -> ExitCode {
    let result = match cmd {
        DecodeCommand::Wmbus { key, telegram } => decode_wmbus(key.as_deref(), &telegram),
        DecodeCommand::Lorawan { profile, port, payload } => decode_lorawan(&profile, port, &payload),
    };
    match result {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(m)) => {
            eprintln!("district-gateway decode: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Decode(m)) => {
            eprintln!("district-gateway decode: {m}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// The arguments cannot be used (bad hex, bad key length, unknown profile).
    Usage(String),
    /// The input was read but does not decode (wrong key, bad telegram, decoder error).
    Decode(String),
}

/// Hex with optional spaces; the error names `what` and the digit count, never the text (it may be a key).
fn parse_hex(what: &str, s: &str) -> Result<Vec<u8>, Failure> {
    let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(&digits).map_err(|_| {
        Failure::Usage(format!(
            "{what}: expected hex digits (an even number of 0-9a-f), got {} characters",
            digits.len()
        ))
    })
}

fn decode_wmbus(key: Option<&str>, telegram: &str) -> Result<Value, Failure> {
    let key: Option<[u8; 16]> = match key {
        None => None,
        Some(k) => {
            let bytes = parse_hex("--key", k)?;
            let n = bytes.len() * 2;
            Some(bytes.try_into().map_err(|_| Failure::Usage(format!("--key: expected 32 hex digits, got {n}")))?)
        }
    };
    let frame = parse_hex("TELEGRAM_HEX", telegram)?;
    let t = wmbus::decode_telegram(&frame, key.as_ref()).map_err(|e| Failure::Decode(format!("wmbus: {e}")))?;
    Ok(json!({
        "id": t.header.id,
        "manufacturer": t.header.manufacturer,
        "version": t.header.version,
        "type": t.header.device_type_name(),
        "device_type": t.header.device_type,
        "access_number": t.access_number,
        "status": t.status,
        "encrypted": t.encrypted,
        "metrics": t.metrics,
        "warnings": t.warnings,
    }))
}

fn decode_lorawan(profile: &str, port: u8, payload: &str) -> Result<Value, Failure> {
    let bytes = parse_hex("HEX", payload)?;
    let mut decoder: Box<dyn decode::Decoder> = if let Some(path) = profile.strip_prefix("js:") {
        let source = std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("reading codec {path}: {e}")))?;
        let origin = std::time::Instant::now();
        let clock: decode::js::Clock = Arc::new(move || origin.elapsed());
        let codec = decode::js::JsCodec::load(profile, &source, decode::js::JsLimits::default(), clock)
            .map_err(|e| Failure::Usage(format!("codec {path}: {e}")))?;
        Box::new(codec)
    } else {
        decode::native(profile).ok_or_else(|| {
            Failure::Usage(format!(
                "unknown profile {profile:?}; native profiles: {}, or js:PATH",
                decode::NATIVE_PROFILES.join(", ")
            ))
        })?
    };
    let d = decoder.decode(port, &bytes).map_err(|e| Failure::Decode(format!("{profile}: {e}")))?;
    Ok(json!({
        "profile": profile,
        "f_port": port,
        "metrics": d.metrics,
        "warnings": d.warnings,
        "errors": d.errors,
    }))
}
