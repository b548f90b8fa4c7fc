//! The `tags` scenario: N connections in one room, every K-th tagged `hot`
//! (the others `cold`) through the relay kind's `?tag=` parameter; messages
//! are published through dormouse's publish API, first to the `hot` tag,
//! then to the whole room, at the same rate for the same time.
//!
//! Every delivery is checked: a tag publish must reach each hot connection
//! once and no cold one; a full publish every connection once. The server's
//! CPU time per message in each phase (with `--server-pid`) and the publish
//! request's latency give the cost of a tag publish against a full one.

use crate::fanout::{self, histogram, now_ns, stamp, summarize, Percentiles, Plan, Summary};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a `tags` run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TagsReport {
    pub connections: usize,
    pub tag_every: usize,
    pub tagged_connections: u64,
    pub payload_bytes: usize,
    pub connect_secs: f64,
    /// The tag phase, then the full phase.
    pub phases: Vec<PhaseReport>,
    /// Tag publishes delivered to a connection without the tag.
    pub wrong_receivers: u64,
    pub out_of_order: u64,
    /// Publish responses whose `delivered` count differed from the receivers expected.
    pub delivered_count_mismatches: u64,
    pub errors: std::collections::HashMap<String, u64>,
    pub handshake_latency_us: Percentiles,
    /// Server CPU per tag publish over server CPU per full publish.
    pub cpu_ratio_tag_to_full: Option<f64>,
    /// Median publish latency of the tag phase over the full phase's.
    pub publish_p50_ratio_tag_to_full: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseReport {
    pub name: &'static str,
    pub secs: f64,
    #[serde(flatten)]
    pub summary: Summary,
    /// The publish request's round trip: the response comes once every core
    /// has queued the frame for its members.
    pub publish_latency_us: Percentiles,
    pub server_cpu_us_per_message: Option<f64>,
}

/// A phase as the driver saw it.
struct Sent {
    messages: u64,
    secs: f64,
    publish: hdrhistogram::Histogram<u64>,
    cpu_secs: Option<f64>,
    mismatches: u64,
}

pub fn run(plan: Plan, token: &str, rate: f64) -> Result<TagsReport> {
    let tag_every = plan.tag_every.expect("the tags plan tags connections");
    let plan = Arc::new(plan);
    let publish_path = format!(
        "{}/_publish",
        plan.target.path.replace("{room}", &plan.room).split('?').next().unwrap_or_default().trim_end_matches('/')
    );
    let driver_plan = plan.clone();
    let run = fanout::drive(plan.clone(), move |progress, epoch, _start| {
        let plan = driver_plan;
        let mut client = PublishClient::connect(plan.target.addr, token)?;
        let mut payload = vec![0u8; plan.payload_bytes.max(fanout::HEADER_BYTES)];
        let mut phases = Vec::new();
        for (publisher, tag) in [(fanout::TAG_PUBLISHER, Some(fanout::HOT_TAG)), (fanout::FULL_PUBLISHER, None)] {
            let path = match tag {
                Some(tag) => format!("{publish_path}?tag={tag}"),
                None => publish_path.clone(),
            };
            let receivers = plan.receivers_of(publisher);
            let cpu_before = plan.server_pid.map(crate::target::sample).transpose()?;
            let started = Instant::now();
            let mut sent = Sent { messages: 0, secs: 0.0, publish: histogram(), cpu_secs: None, mismatches: 0 };
            while started.elapsed() < plan.duration {
                let due = (started.elapsed().as_secs_f64() * rate) as u64 + 1;
                if sent.messages >= due {
                    // Pacing: wait for the next message's time on the schedule.
                    let next = Duration::from_secs_f64(sent.messages as f64 / rate);
                    std::thread::sleep(next.saturating_sub(started.elapsed()).min(Duration::from_millis(5)));
                    continue;
                }
                stamp(&mut payload, publisher, sent.messages, now_ns(epoch));
                progress.count_sent(receivers);
                let t = Instant::now();
                let delivered = client.publish(&path, &payload)?;
                let _ = sent.publish.record((t.elapsed().as_nanos() as u64).max(1));
                if delivered != receivers {
                    sent.mismatches += 1;
                }
                sent.messages += 1;
            }
            // Let this phase's deliveries finish before measuring it.
            let deadline = Instant::now() + plan.drain;
            while !progress.all_delivered() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            sent.secs = started.elapsed().as_secs_f64();
            let cpu_after = plan.server_pid.map(crate::target::sample).transpose()?;
            sent.cpu_secs = cpu_before.zip(cpu_after).map(|(b, a)| a.cpu_secs - b.cpu_secs);
            phases.push((publisher, sent));
        }
        Ok(phases)
    })?;
    let common = fanout::common(&run.tallies);
    let mut phases = Vec::new();
    let mut mismatches = 0;
    for (publisher, sent) in run.out {
        let summary = summarize(&run.tallies, fanout::class_of(publisher), sent.messages, plan.receivers_of(publisher));
        mismatches += sent.mismatches;
        phases.push(PhaseReport {
            name: if publisher == fanout::TAG_PUBLISHER { "tag" } else { "full" },
            secs: sent.secs,
            server_cpu_us_per_message: sent
                .cpu_secs
                .filter(|_| sent.messages > 0)
                .map(|c| c * 1e6 / sent.messages as f64),
            publish_latency_us: Percentiles::from(&sent.publish),
            summary,
        });
    }
    let cpu_ratio_tag_to_full = match (phases[0].server_cpu_us_per_message, phases[1].server_cpu_us_per_message) {
        (Some(tag), Some(full)) if full > 0.0 => Some(tag / full),
        _ => None,
    };
    let publish_p50_ratio_tag_to_full =
        phases[0].publish_latency_us.p50 / phases[1].publish_latency_us.p50.max(f64::MIN_POSITIVE);
    Ok(TagsReport {
        connections: plan.connections,
        tag_every,
        tagged_connections: plan.hot_connections(),
        payload_bytes: plan.payload_bytes.max(fanout::HEADER_BYTES),
        connect_secs: run.connect_secs,
        phases,
        wrong_receivers: common.wrong_receivers,
        out_of_order: common.out_of_order,
        delivered_count_mismatches: mismatches,
        errors: common.errors,
        handshake_latency_us: Percentiles::from(&common.handshake),
        cpu_ratio_tag_to_full,
        publish_p50_ratio_tag_to_full,
    })
}

/// A keep-alive HTTP/1.1 connection to the publish API.
struct PublishClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: SocketAddr,
    auth: String,
}

impl PublishClient {
    fn connect(addr: SocketAddr, token: &str) -> Result<PublishClient> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect to {addr} to publish"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(PublishClient {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            host: addr,
            auth: format!("Bearer {token}"),
        })
    }

    /// Publishes `body` (binary) to `path`; returns the server's delivered count.
    fn publish(&mut self, path: &str, body: &[u8]) -> Result<u64> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            self.host,
            self.auth,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.writer.write_all(&request).context("send a publish request")?;
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).context("read the publish response")?;
        let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the server closed the publish connection");
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().context("Content-Length")?;
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        let body = String::from_utf8_lossy(&body);
        match status {
            200 => {}
            404 => bail!("publish answered 404 ({body}): is the server dormouse with `publish_token` set?"),
            401 => bail!("publish answered 401: wrong --publish-token"),
            _ => bail!("publish answered {status}: {body}"),
        }
        let doc: serde_json::Value = serde_json::from_str(&body).context("publish response is JSON")?;
        doc["delivered"].as_u64().context("publish response has a delivered count")
    }
}
