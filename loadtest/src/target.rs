//! What a load test points at: the server URL (loopback only), the source
//! addresses to connect from, and the server process to sample from /proc.

use anyhow::{bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A `ws://` (or, for the HTTP scenarios, `http://`) URL split into the
/// address and the request target. `{room}` in the path is replaced per room
/// by the scenarios that use several rooms.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
}

impl Target {
    /// A `ws://` URL.
    pub fn parse(url: &str) -> Result<Target> {
        Target::parse_scheme(url, "ws://")
    }

    /// An `http://` URL.
    pub fn parse_http(url: &str) -> Result<Target> {
        Target::parse_scheme(url, "http://")
    }

    fn parse_scheme(url: &str, scheme: &str) -> Result<Target> {
        let rest = url.strip_prefix(scheme).with_context(|| format!("the URL must start with {scheme}"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = authority.parse().with_context(|| format!("{authority:?} is not an ip:port address"))?;
        if !addr.ip().is_loopback() {
            bail!("load tests target only loopback addresses, not {}", addr.ip());
        }
        Ok(Target { addr, path: path.to_owned() })
    }

    /// The request target for connection `id` in `room`.
    pub fn request_target(&self, room: &str, id: &str) -> String {
        let path = self.path.replace("{room}", room);
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{path}{sep}_pk={id}")
    }
}

/// Parses `127.0.0.2-127.0.0.9` or `127.0.0.2,127.0.0.3` into addresses.
pub fn parse_source_ips(spec: &str) -> Result<Vec<IpAddr>> {
    let mut ips = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((from, to)) = part.split_once('-') {
            let from: Ipv4Addr = from.trim().parse().with_context(|| format!("bad address {from:?}"))?;
            let to: Ipv4Addr = to.trim().parse().with_context(|| format!("bad address {to:?}"))?;
            let (a, b) = (u32::from(from), u32::from(to));
            if b < a || b - a > 1024 {
                bail!("source range {part:?} must go upwards and hold at most 1025 addresses");
            }
            ips.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
        } else {
            ips.push(part.parse().with_context(|| format!("bad address {part:?}"))?);
        }
    }
    if ips.iter().any(|ip| !ip.is_loopback()) {
        bail!("source addresses must be loopback addresses");
    }
    Ok(ips)
}

/// Resident memory and CPU time of a process, from /proc.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ProcSample {
    pub rss_bytes: u64,
    /// The anonymous part of the RSS: the heap, where room objects live.
    pub rss_anon_bytes: u64,
    /// The file-backed part: mapped binaries and LMDB's memory map, which the
    /// kernel may drop under pressure.
    pub rss_file_bytes: u64,
    pub cpu_secs: f64,
}

pub fn sample(pid: u32) -> Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read the server's /proc/{pid}/status"))?;
    let kib = |field: &str| -> Result<u64> {
        let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} line"))?;
        let value = line.split_whitespace().nth(1).with_context(|| format!("{field} value"))?;
        value.parse::<u64>().with_context(|| format!("{field} {value:?}"))
    };
    let (rss_kib, anon_kib, file_kib) = (kib("VmRSS:")?, kib("RssAnon:")?, kib("RssFile:")?);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("read the server's /proc stat")?;
    // Fields after the command name (which may contain spaces) start at state.
    let after = &stat[stat.rfind(')').context("stat has a command name")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // /proc reports CPU time in USER_HZ ticks, which Linux fixes at 100.
    Ok(ProcSample {
        rss_bytes: rss_kib * 1024,
        rss_anon_bytes: anon_kib * 1024,
        rss_file_bytes: file_kib * 1024,
        cpu_secs: ticks as f64 / 100.0,
    })
}

/// The open file descriptors of a process: the entries of /proc/PID/fd.
pub fn open_fds(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&dir).with_context(|| format!("read the server's {dir}"))?.count() as u64)
}

/// The machine a run happened on, for the JSON report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub loadtest_version: &'static str,
}

pub fn machine() -> Machine {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel,
        cpu_model,
        loadtest_version: env!("CARGO_PKG_VERSION"),
    }
}
