//! A `nats-server` (Debian's, JetStream on, its store in a temporary
//! directory) on a port of its choosing, for the cluster's tests; ended
//! (by its PID) on drop.

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
        assert!(
            std::path::Path::new(NATS_SERVER).exists(),
            "these tests need Debian's nats-server at {NATS_SERVER} (apt-get install nats-server; .ci/run does)"
        );
        let mut child = Command::new(NATS_SERVER)
            .args(["-js", "-a", "127.0.0.1", "-p", port, "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server starts");
        let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
        let (mut bound, mut line) = (None, String::new());
        loop {
            line.clear();
            assert!(log.read_line(&mut line).unwrap() > 0, "nats-server ended while starting");
            if let Some((_, rest)) = line.split_once("Listening for client connections on ") {
                bound = rest.trim().rsplit(':').next().map(str::to_owned);
            }
            if line.contains("Server is ready") {
                break;
            }
        }
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        let url = format!("nats://127.0.0.1:{}", bound.expect("nats-server said its port"));
        (child, url)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
