//! `[openadr]`: the OpenADR 3.1 VEN (PRODUCT.md pins the keys). Parsed here, checked against the rest
//! of the config (a VEN without `[demand_response]` has nothing to drive), and read by
//! `io::openadr`. The client secret is never in the config itself: `client_secret_file` names a file
//! readable by the service user only (checked when the daemon starts, where the file is).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::problem::Sink;
use super::spans::{Doc, KeyPath};

/// Shortest and longest poll interval: faster polls load the VTN for nothing, slower ones make an
/// event's start late.
pub const POLL_INTERVAL_S: std::ops::RangeInclusive<u64> = 1..=3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAdrConfig {
    /// The VTN's base URL (where `/programs` and `/events` live).
    pub vtn_url: String,
    /// The OAuth 2 client-credentials endpoint. Default: the VTN's own (`<vtn_url>/auth/token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    /// Registered at the VTN if not there yet.
    pub ven_name: String,
    /// The `programName` whose events drive the feeder limit.
    pub program: String,
    /// More programs to follow beside `program` (their events combine: the tightest limit wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_programs: Vec<String>,
    /// How often the VTN is asked for its events, s (1..=3600). Default: 30.
    #[serde(default = "default_poll_interval_s")]
    pub poll_interval_s: u64,
    /// A request to the VTN that takes longer fails (and is retried at the next poll), s. Default: 10.
    #[serde(default = "default_request_timeout_s")]
    pub request_timeout_s: u64,
}

fn default_poll_interval_s() -> u64 {
    30
}

fn default_request_timeout_s() -> u64 {
    10
}

impl OpenAdrConfig {
    /// Every program followed, `program` first.
    pub fn programs(&self) -> Vec<String> {
        std::iter::once(self.program.clone()).chain(self.more_programs.iter().cloned()).collect()
    }

    /// The token endpoint: `token_url`, else the VTN's own `auth/token`.
    pub fn token_endpoint(&self) -> String {
        self.token_url.clone().unwrap_or_else(|| format!("{}/auth/token", self.vtn_url.trim_end_matches('/')))
    }
}

/// An `http://` or `https://` URL with a host.
fn http_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("expected an http:// or https:// URL, got {s:?}"))?;
    if rest.split('/').next().is_none_or(str::is_empty) {
        return Err(format!("the URL {s:?} has no host"));
    }
    Ok(())
}

pub(super) fn check(doc: &Doc<'_>, c: &OpenAdrConfig, has_demand_response: bool, sink: &mut Sink) {
    let p = KeyPath::root().key("openadr");
    if let Err(e) = http_url(&c.vtn_url) {
        doc.problem(sink, p.key("vtn_url"), e);
    }
    if let Some(t) = &c.token_url {
        if let Err(e) = http_url(t) {
            doc.problem(sink, p.key("token_url"), e);
        }
    }
    for (key, v) in [("client_id", &c.client_id), ("ven_name", &c.ven_name), ("program", &c.program)] {
        if v.is_empty() || v.len() > 128 {
            doc.problem(sink, p.key(key), "must be 1..=128 characters".to_string());
        }
    }
    if !POLL_INTERVAL_S.contains(&c.poll_interval_s) {
        doc.problem(sink, p.key("poll_interval_s"), format!("must be 1..=3600 s, got {}", c.poll_interval_s));
    }
    if !(1..=300).contains(&c.request_timeout_s) {
        doc.problem(sink, p.key("request_timeout_s"), format!("must be 1..=300 s, got {}", c.request_timeout_s));
    }
    if !has_demand_response {
        doc.problem(sink, p.clone(), "needs a [demand_response] section: the VTN's events drive its loop".to_string());
    }
}

/// The client secret from `path`: refused when group or others may read the file (the secret must be
/// the service user's alone) or it is empty. The error never contains the secret.
pub fn read_client_secret(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("openadr.client_secret_file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "openadr.client_secret_file {}: mode {mode:o} lets others read it; chmod 600 (readable by the service user only)",
            path.display()
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("openadr.client_secret_file {}: {e}", path.display()))?;
    let secret = text.trim().to_string();
    if secret.is_empty() {
        return Err(format!("openadr.client_secret_file {}: empty", path.display()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{parse_str, ConfigErrors};
    use std::path::Path;

    const HEAD: &str = "[gateway]\nid = \"g\"\n[mqtt]\nurl = \"mqtt://h\"\n\
        [[source]]\ntype = \"sml\"\nport = \"/dev/ttyUSB0\"\ndevice = \"feeder\"\n";
    const DR: &str = "[demand_response]\nmeter = \"feeder\"\nlimit_kw = 100.0\n\
        [[demand_response.load]]\nname = \"hp-1\"\nkind = \"sg-ready\"\nrated_kw = 6.0\npriority = 1\n\
        output = { type = \"gpio\", pins = [17, 27] }\n";
    const OADR: &str = "[openadr]\nvtn_url = \"https://vtn.example.org/openadr3\"\n\
        token_url = \"https://auth.example.org/token\"\nclient_id = \"garstedt-01\"\n\
        client_secret_file = \"/etc/district-gateway/openadr.secret\"\nven_name = \"garstedt-01\"\n\
        program = \"feeder-garstedt\"\npoll_interval_s = 30\n";

    fn parse(text: &str) -> Result<crate::config::Config, ConfigErrors> {
        parse_str(text, "test.toml", Path::new("/etc/district-gateway"))
    }

    fn keys(e: ConfigErrors) -> Vec<String> {
        e.0.into_iter().map(|p| p.key_path).collect()
    }

    #[test]
    fn the_product_example_parses() {
        let c = parse(&format!("{HEAD}{DR}{OADR}")).expect("valid");
        let o = c.openadr.expect("openadr");
        assert_eq!(o.programs(), vec!["feeder-garstedt".to_string()]);
        assert_eq!(o.token_endpoint(), "https://auth.example.org/token");
        assert_eq!((o.poll_interval_s, o.request_timeout_s), (30, 10));
        let own = OpenAdrConfig { token_url: None, vtn_url: "http://127.0.0.1:8080/".into(), ..o };
        assert_eq!(own.token_endpoint(), "http://127.0.0.1:8080/auth/token");
    }

    #[test]
    fn bad_values_are_reported_at_their_keys() {
        let bad = OADR.replace("https://vtn.example.org/openadr3", "ftp://x").replace("= 30", "= 0");
        let e = parse(&format!("{HEAD}{DR}{bad}ven_bogus = 1\n")).expect_err("invalid");
        let k = keys(e);
        assert!(k.contains(&"openadr.vtn_url".to_string()), "{k:?}");
        assert!(k.contains(&"openadr.poll_interval_s".to_string()), "{k:?}");
        assert!(k.iter().any(|k| k.starts_with("openadr")), "{k:?}");
        let e = parse(&format!("{HEAD}{OADR}")).expect_err("no demand_response");
        assert_eq!(keys(e), vec!["openadr".to_string()]);
    }

    #[test]
    fn the_secret_file_must_be_private_and_is_never_quoted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("s");
        std::fs::write(&f, "top-secret-value\n").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = read_client_secret(&f).expect_err("world-readable");
        assert!(e.contains("chmod 600") && !e.contains("top-secret"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_client_secret(&f).as_deref(), Ok("top-secret-value"));
        std::fs::write(&f, "\n").expect("write");
        assert!(read_client_secret(&f).expect_err("empty").contains("empty"));
        assert!(read_client_secret(&dir.path().join("missing")).is_err());
    }
}
