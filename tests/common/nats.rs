//! A `nats-server` (Debian's, JetStream on, its store in a temporary
//! directory) on a port of its choosing, for the cluster's tests, or three
//! of them routed into one NATS cluster with clustered JetStream
//! ([`NatsCluster`]); ended (by their PIDs) on drop.

use std::io::BufRead;
use std::process::{Command, Stdio};

pub const NATS_SERVER: &str = "/usr/sbin/nats-server";

pub struct NatsServer {
    child: std::process::Child,
    pub url: String,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let store = tempfile::tempdir().unwrap();
        let (child, url) = NatsServer::spawn(store.path(), "-1");
        NatsServer { child, url, store }
    }

    /// Ends the server (SIGKILL) and starts it again on the same port and
    /// store, as after a crash.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.url.rsplit(':').next().unwrap().to_owned();
        let (child, url) = NatsServer::spawn(self.store.path(), &port);
        assert_eq!(url, self.url);
        self.child = child;
    }

    /// Sends the server `signal` (SIGSTOP, SIGCONT).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the PID is our
        // child's, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    fn spawn(store: &std::path::Path, port: &str) -> (std::process::Child, String) {
        let (child, url, _) = spawn(store, port, &[], None);
        (child, url)
    }
}

/// Starts a nats-server with `extra` arguments; returns it, its client URL
/// and, when `watch_for` is given, a channel that hears once when a line
/// of its log holds that text (the log is drained either way, so that the
/// server never blocks on a full pipe).
fn spawn(
    store: &std::path::Path,
    port: &str,
    extra: &[String],
    watch_for: Option<&'static str>,
) -> (std::process::Child, String, std::sync::mpsc::Receiver<()>) {
    assert!(
        std::path::Path::new(NATS_SERVER).exists(),
        "these tests need Debian's nats-server at {NATS_SERVER} (apt-get install nats-server; .ci/run does)"
    );
    let mut child = Command::new(NATS_SERVER)
        .args(["-js", "-a", "127.0.0.1", "-p", port, "-sd"])
        .arg(store)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nats-server starts");
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let (mut bound, mut line) = (None, String::new());
    let (seen, heard) = std::sync::mpsc::channel();
    let mut seen = Some(seen);
    loop {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "nats-server ended while starting");
        if let Some((_, rest)) = line.split_once("Listening for client connections on ") {
            bound = rest.trim().rsplit(':').next().map(str::to_owned);
        }
        if watch_for.is_some_and(|text| line.contains(text)) {
            let _ = seen.take().map(|s| s.send(()));
        }
        if line.contains("Server is ready") {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut line = String::new();
        while log.read_line(&mut line).is_ok_and(|n| n > 0) {
            if watch_for.is_some_and(|text| line.contains(text)) {
                let _ = seen.take().map(|s| s.send(()));
            }
            line.clear();
        }
    });
    let url = format!("nats://127.0.0.1:{}", bound.expect("nats-server said its port"));
    (child, url, heard)
}

/// Three nats-servers routed into one cluster, JetStream clustered over
/// them (streams with `replicas = 3` survive the loss of one server).
pub struct NatsCluster {
    servers: Vec<Option<std::process::Child>>,
    pub urls: Vec<String>,
    _stores: Vec<tempfile::TempDir>,
}

impl NatsCluster {
    /// Starts the three and waits until their JetStream has a metadata
    /// leader (before that, no stream can be made).
    pub fn start() -> NatsCluster {
        // Route ports: taken from the kernel, then let go for the servers
        // (each must know the others' before any starts).
        let routes: Vec<u16> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect::<Vec<_>>()
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let (mut servers, mut urls, mut stores, mut leaders) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, port) in routes.iter().enumerate() {
            let store = tempfile::tempdir().unwrap();
            let others: Vec<String> =
                routes.iter().filter(|p| *p != port).map(|p| format!("nats://127.0.0.1:{p}")).collect();
            let extra = [
                "-n".to_owned(),
                format!("nats-{i}"),
                "--cluster_name".to_owned(),
                "dm".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{port}"),
                "--routes".to_owned(),
                others.join(","),
            ];
            let (child, url, leader) = spawn(store.path(), "-1", &extra, Some("metadata leader"));
            servers.push(Some(child));
            urls.push(url);
            stores.push(store);
            leaders.push(leader);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        'elected: loop {
            for leader in &leaders {
                if leader.try_recv().is_ok() {
                    break 'elected;
                }
            }
            assert!(std::time::Instant::now() < deadline, "the NATS cluster never elected a JetStream leader");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        NatsCluster { servers, urls, _stores: stores }
    }

    /// Ends server `i` with SIGKILL, as a crash of its machine.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
