//! A server in a child process (this test binary, re-run with one test
//! that serves until SIGTERM), for tests that kill it with SIGKILL or stop
//! it with SIGTERM and start it again on the same data directory.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// A server in a child process, killed (by its PID) when dropped. Its log
/// (stderr) is collected, and shown if the test fails.
pub struct ChildServer {
    process: std::process::Child,
    pub addr: SocketAddr,
    stdout: BufReader<std::process::ChildStdout>,
    log: Option<std::thread::JoinHandle<String>>,
}

impl ChildServer {
    /// Runs test `test` of this test binary (a server that prints
    /// `LISTENING <addr>`, and `STOPPED` once it has shut down) with `envs`.
    pub fn start(test: &str, envs: &[(&str, String)]) -> ChildServer {
        let mut process = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .envs(envs.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = process.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut log = String::new();
            let _ = stderr.read_to_string(&mut log);
            log
        });
        let mut stdout = BufReader::new(process.stdout.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let _ = process.wait();
                panic!("the child ended before listening:\n{}", log.join().unwrap_or_default());
            }
            // The harness may have begun the line ("test child_server ... ").
            if let Some((_, addr)) = line.trim().split_once("LISTENING ") {
                break addr.parse().unwrap();
            }
        };
        ChildServer { process, addr, stdout, log: Some(log) }
    }

    pub fn kill_9(mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
    }

    /// Sends signal `signal` (SIGSTOP, SIGCONT, ...) to the child.
    pub fn signal(&self, signal: i32) {
        // SAFETY: as in `sigterm`.
        assert_eq!(unsafe { libc::kill(self.process.id() as i32, signal) }, 0);
    }

    /// Asks for a graceful shutdown.
    pub fn sigterm(&self) {
        // SAFETY: kill has no memory-safety preconditions; the PID is our
        // child's, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(self.process.id() as i32, libc::SIGTERM) }, 0);
    }

    /// SIGTERM; returns the exit status once the child is gone.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.sigterm();
        self.wait_stopped()
    }

    pub fn wait_stopped(self) -> std::process::ExitStatus {
        self.wait_stopped_with_log().0
    }

    /// SIGTERM; the exit status and everything the child logged.
    pub fn terminate_with_log(self) -> (std::process::ExitStatus, String) {
        self.sigterm();
        self.wait_stopped_with_log()
    }

    pub fn wait_stopped_with_log(mut self) -> (std::process::ExitStatus, String) {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        assert!(rest.contains("STOPPED"), "{rest}");
        let status = self.process.wait().unwrap();
        (status, self.log.take().expect("the log is collected once").join().unwrap())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        if let (true, Some(log)) = (std::thread::panicking(), self.log.take()) {
            eprintln!("the child server's log:\n{}", log.join().unwrap_or_default());
        }
    }
}
