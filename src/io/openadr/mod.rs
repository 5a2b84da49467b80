//! The OpenADR 3.1 VEN (`[openadr]`), on `openleadr-client`: it registers the gateway at the VTN
//! (`ven_name`, created if the VTN does not know it yet), polls the events of the programs it follows
//! every `poll_interval_s`, maps them with the pure [`crate::openadr`] and hands the complete set to the
//! pipeline ([`Control::VtnEvents`]), where the demand-response loop books what is new or modified and
//! cancels what the VTN withdrew. Reports of the intervals it followed go back to the VTN.
//!
//! The VTN unreachable (or refusing): nothing is handed over, so the events already booked run to their
//! end and the fail-safe rules stay as they are; the VEN retries at the next poll, and its status says
//! `down` with the reason (status page, `/metrics`). Subscriptions (webhooks, MQTT notifiers) are not
//! used: a webhook needs the VTN to reach the gateway, which a district gateway behind the utility's NAT
//! usually cannot offer; polling works everywhere.
//!
//! Secrets: the client secret is read from `client_secret_file` at start and only given to the client;
//! errors are logged through [`describe`], which never prints a request's body or credentials.

mod wire;

pub use wire::map_json;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use openleadr_client::{Client, ClientCredentials, Filter, VirtualEndNode};
use openleadr_wire::event::EventId;
use openleadr_wire::ven::VenVenRequest;
use tokio::sync::{mpsc, oneshot, watch};

use crate::bus::Control;
use crate::config::openadr::OpenAdrConfig;
use crate::control::demand::{DrEvent, EventAck};
use crate::counters::Counters;
use crate::io::status::SourceStatus;
use crate::openadr::{to_dr_events, IntervalReport, Refusal};
use crate::topic::Topic;

/// Reports kept for the VTN while it is unreachable, at most (the oldest go first; every report is
/// also journaled for the city).
const MAX_PENDING_REPORTS: usize = 256;
/// Refusals remembered (so each version is reported once), at most.
const MAX_REFUSALS_SEEN: usize = 4096;

/// The VEN's name in logs, status and metrics.
pub const NAME: &str = "openadr";

/// What the VEN needs from the rest of the daemon.
pub struct VenWiring {
    pub control: mpsc::Sender<Control>,
    pub reports: mpsc::Receiver<IntervalReport>,
    pub status: Arc<SourceStatus>,
    pub counters: Arc<Counters>,
    pub shutdown: watch::Receiver<bool>,
}

/// A short, secret-free description of a client error for logs and status.
fn describe(e: &openleadr_client::Error) -> String {
    use openleadr_client::Error;
    match e {
        Error::Reqwest(r) if r.is_timeout() => "timed out".into(),
        Error::Reqwest(r) if r.is_connect() => "unreachable (connection failed)".into(),
        Error::Reqwest(r) => match r.status() {
            Some(s) => format!("HTTP {s}"),
            None => "request failed".into(),
        },
        Error::Problem(p) => format!("the VTN answered {}: {}", p.status, p.title.as_deref().unwrap_or("problem")),
        Error::AuthProblem(_) | Error::OAuthTokenNotBearer => {
            "the token endpoint refused the client credentials".into()
        }
        Error::Serde(_) => "the VTN's answer could not be read".into(),
        Error::UrlParseError(_) => "bad URL".into(),
        Error::ObjectNotFound => "not found".into(),
        Error::DuplicateObject => "more than one object of that name".into(),
        Error::InvalidParentObject | Error::InvalidInterval => "invalid request".into(),
    }
}

/// The VTN (or its token endpoint) refused the client's token or credentials.
fn unauthorized(e: &openleadr_client::Error) -> bool {
    match e {
        openleadr_client::Error::Problem(p) => p.status == reqwest::StatusCode::UNAUTHORIZED,
        openleadr_client::Error::Reqwest(r) => r.status() == Some(reqwest::StatusCode::UNAUTHORIZED),
        openleadr_client::Error::AuthProblem(_) | openleadr_client::Error::OAuthTokenNotBearer => true,
        _ => false,
    }
}

/// The VTN rejected the request for good (4xx): retrying the same one cannot help.
fn rejected(e: &openleadr_client::Error) -> bool {
    match e {
        openleadr_client::Error::Problem(p) => p.status.is_client_error(),
        openleadr_client::Error::ObjectNotFound | openleadr_client::Error::InvalidParentObject => true,
        _ => false,
    }
}

/// The client for `cfg`, with `secret`.
pub fn client(cfg: &OpenAdrConfig, secret: String) -> anyhow::Result<Client<VirtualEndNode>> {
    let vtn: url::Url = format!("{}/", cfg.vtn_url.trim_end_matches('/'))
        .parse()
        .map_err(|e| anyhow::anyhow!("openadr.vtn_url: {e}"))?;
    let token: url::Url = cfg.token_endpoint().parse().map_err(|e| anyhow::anyhow!("openadr.token_url: {e}"))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(cfg.request_timeout_s))
        .connect_timeout(Duration::from_secs(cfg.request_timeout_s.min(10)))
        .build()
        .map_err(|e| anyhow::anyhow!("openadr: HTTP client: {e}"))?;
    Ok(Client::with_details(vtn, token, http, Some(ClientCredentials::new(cfg.client_id.clone(), secret))))
}

/// The VEN's state between polls.
struct Ven {
    cfg: OpenAdrConfig,
    /// Kept to make a new client when the VTN refuses the token (see [`Ven::vtn_down`]).
    secret: String,
    client: Client<VirtualEndNode>,
    w: VenWiring,
    registered: bool,
    /// (event id, modification) of refusals already reported.
    refused_seen: BTreeSet<(String, u32)>,
    pending: VecDeque<IntervalReport>,
    /// The VTN answered the last poll (for logging transitions once, not every poll).
    up: Option<bool>,
}

/// Runs the VEN until shutdown.
pub async fn run(cfg: OpenAdrConfig, secret: String, w: VenWiring) -> anyhow::Result<()> {
    let every = Duration::from_secs(cfg.poll_interval_s);
    let mut ven = Ven {
        client: client(&cfg, secret.clone())?,
        cfg,
        secret,
        w,
        registered: false,
        refused_seen: BTreeSet::new(),
        pending: VecDeque::new(),
        up: None,
    };
    tracing::info!(vtn = %ven.cfg.vtn_url, ven = %ven.cfg.ven_name, programs = ?ven.cfg.programs(), "OpenADR VEN started");
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                next = tokio::time::Instant::now() + every;
                ven.poll().await;
                ven.send_reports().await;
            }
            r = ven.w.reports.recv() => match r {
                Some(r) => {
                    ven.queue(r);
                    ven.send_reports().await;
                }
                None => break,
            },
            _ = ven.w.shutdown.changed() => break,
        }
        if *ven.w.shutdown.borrow() {
            break;
        }
    }
    ven.w.status.set_stopped();
    Ok(())
}

impl Ven {
    fn queue(&mut self, r: IntervalReport) {
        if self.pending.len() >= MAX_PENDING_REPORTS {
            self.pending.pop_front();
            Counters::inc(&self.w.counters.openadr_reports_dropped);
        }
        self.pending.push_back(r);
    }

    fn vtn_down(&mut self, what: &str, e: &openleadr_client::Error) {
        let why = format!("{what}: {}", describe(e));
        Counters::inc(&self.w.counters.openadr_poll_errors);
        if self.up != Some(false) {
            tracing::warn!(error = %why, "OpenADR VTN unreachable; the events already booked run on");
        }
        self.w.status.set_down(why);
        self.up = Some(false);
        // openleadr-client fetches a token only when its own clock says the last one expired, never on
        // a refusal: a VTN whose signing key was rotated would refuse the VEN until then (30 days with
        // openleadr-vtn's provider). A refused token gets a new client, and so a new token next poll.
        if unauthorized(e) {
            match client(&self.cfg, self.secret.clone()) {
                Ok(c) => self.client = c,
                Err(e) => tracing::warn!(error = %e, "OpenADR client not rebuilt"),
            }
        }
    }

    /// Registers the VEN if needed; reads the programs' events; hands the set to the loop.
    async fn poll(&mut self) {
        if !self.registered {
            match self.register().await {
                Ok(()) => self.registered = true,
                Err(e) => return self.vtn_down("registering the VEN", &e),
            }
        }
        let mut events = Vec::new();
        let programs = match self.client.get_program_list(Filter::none()).await {
            Ok(p) => p,
            Err(e) => return self.vtn_down("reading programs", &e),
        };
        let wanted = self.cfg.programs();
        for program in programs.iter().filter(|p| wanted.contains(&p.content().program_name)) {
            match self.client.get_event_list(Some(program.id()), Filter::none()).await {
                Ok(list) => events.extend(list.iter().map(|e| {
                    let ev = openleadr_wire::Event {
                        id: e.id().clone(),
                        created_date_time: e.created_date_time(),
                        modification_date_time: e.modification_date_time(),
                        content: e.content().clone(),
                    };
                    wire::vtn_event(&ev)
                })),
                Err(e) => return self.vtn_down("reading events", &e),
            }
        }
        Counters::inc(&self.w.counters.openadr_polls);
        if self.up != Some(true) {
            tracing::info!(vtn = %self.cfg.vtn_url, events = events.len(), "OpenADR VTN reachable");
        }
        self.up = Some(true);
        self.w.status.set_up();
        let mut mapped: Vec<DrEvent> = Vec::new();
        for ev in &events {
            let (dr, refused) = to_dr_events(ev);
            mapped.extend(dr);
            let version = crate::openadr::modification(ev.modified);
            for r in refused {
                self.refused(r, version).await;
            }
        }
        let (reply, answer) = oneshot::channel();
        if self.w.control.send(Control::VtnEvents { events: mapped, reply }).await.is_err() {
            return;
        }
        for (id, ack) in answer.await.unwrap_or_default() {
            match ack {
                Ok(EventAck::Stale { .. }) | Ok(EventAck::NotFound) => {}
                Ok(EventAck::Expired) => tracing::debug!(event = %id, "OpenADR interval already over"),
                Ok(a) => tracing::info!(event = %id, ack = a.as_str(), "OpenADR event"),
                Err(e) => {
                    let (event_id, interval) = crate::openadr::parse_dr_event_id(&id).unwrap_or((&id, -1));
                    let refusal =
                        Refusal { event_id: event_id.to_string(), interval_id: Some(interval), reason: e.to_string() };
                    let version = events
                        .iter()
                        .find(|v| v.id == event_id)
                        .map_or(0, |v| crate::openadr::modification(v.modified));
                    self.refused(refusal, version).await;
                }
            }
        }
    }

    /// Finds the VEN by name, or creates it.
    async fn register(&self) -> Result<(), openleadr_client::Error> {
        match self.client.get_ven_by_name(&self.cfg.ven_name).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || matches!(e, openleadr_client::Error::ObjectNotFound) => {
                let req = VenVenRequest { ven_name: self.cfg.ven_name.clone(), attributes: None };
                self.client.create_ven(req).await?;
                tracing::info!(ven = %self.cfg.ven_name, "registered at the OpenADR VTN");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Logs, counts and publishes (`event/openadr`) a refused interval, once per event version.
    async fn refused(&mut self, r: Refusal, version: u32) {
        let key = (format!("{}:{:?}", r.event_id, r.interval_id), version);
        if self.refused_seen.contains(&key) {
            return;
        }
        if self.refused_seen.len() >= MAX_REFUSALS_SEEN {
            self.refused_seen.clear();
        }
        self.refused_seen.insert(key);
        Counters::inc(&self.w.counters.openadr_intervals_refused);
        tracing::warn!(event = %r.event_id, interval = ?r.interval_id, reason = %r.reason, "OpenADR interval refused");
        let payload = serde_json::json!({
            "kind": "openadr_refused",
            "at": crate::clock::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "event_id": r.event_id,
            "interval_id": r.interval_id,
            "reason": r.reason,
        });
        let (reply, ok) = oneshot::channel();
        let msg =
            Control::Journal { topic: Topic::Event(NAME.into()), payload: payload.to_string().into_bytes(), reply };
        if self.w.control.send(msg).await.is_ok() {
            let _ = ok.await;
        }
    }

    /// Creates the pending reports at the VTN, oldest first; stops at the first the VTN does not take
    /// for a transient reason (retried later). One the VTN rejects (its event deleted) is dropped.
    async fn send_reports(&mut self) {
        while let Some(r) = self.pending.front().cloned() {
            let Ok(event_id) = r.event_id.parse::<EventId>() else {
                self.pending.pop_front();
                Counters::inc(&self.w.counters.openadr_reports_dropped);
                continue;
            };
            let result = match self.client.get_event_by_id(&event_id).await {
                Ok(event) => {
                    event.create_report(wire::report_request(&r, event_id, &self.cfg.ven_name)).await.map(|_| ())
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    self.pending.pop_front();
                    Counters::inc(&self.w.counters.openadr_reports_sent);
                    tracing::info!(event = %r.event_id, interval = r.interval_id, "OpenADR report sent");
                }
                Err(e) if rejected(&e) => {
                    self.pending.pop_front();
                    Counters::inc(&self.w.counters.openadr_reports_dropped);
                    tracing::warn!(event = %r.event_id, error = %describe(&e), "the VTN did not take a report; dropped");
                }
                Err(e) => {
                    tracing::debug!(error = %describe(&e), "OpenADR report not sent yet");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
