//! Backend selection, seen from outside: the server binary in a child process
//! under a seccomp filter that denies `io_uring_setup` with EPERM, as the
//! default profiles of Docker and containerd do.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// A seccomp program that makes `io_uring_setup` fail with EPERM and allows
/// everything else.
fn deny_io_uring() -> seccompiler::BpfProgram {
    let rules = [(libc::SYS_io_uring_setup, vec![])].into_iter().collect();
    let arch = std::env::consts::ARCH.try_into().expect("seccompiler supports this architecture");
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .expect("the filter is valid");
    filter.try_into().expect("the filter compiles")
}

/// `dormouse serve` with `args`, under the filter.
fn dormouse_without_io_uring(args: &[&str]) -> Command {
    let program = deny_io_uring();
    let mut command = Command::new(env!("CARGO_BIN_EXE_dormouse"));
    command.arg("serve").args(args).arg("--data-dir").arg(fresh_data_dir());
    command.env("RUST_LOG", "info").stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec. It only
    // calls prctl and seccomp on a program compiled before the fork, and
    // builds its error without allocating.
    unsafe {
        command.pre_exec(move || {
            seccompiler::apply_filter(&program).map_err(|_| std::io::Error::from_raw_os_error(libc::EPERM))
        });
    }
    command
}

/// A server process, killed (by its PID) when dropped.
struct Serving {
    child: std::process::Child,
    /// Its log, up to and including the "listening" line.
    log: Vec<String>,
    addr: SocketAddr,
}

impl Serving {
    /// Starts the server and reads its log until it says where it listens.
    fn start(mut command: Command) -> Serving {
        let mut child = command.stderr(Stdio::piped()).spawn().expect("the server starts");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut log = Vec::new();
        let addr = loop {
            let line = lines.recv_timeout(GUARD).unwrap_or_else(|_| panic!("no listening line; log so far: {log:#?}"));
            let addr = line
                .contains("dormouse listening")
                .then(|| line.split_once("addr=").unwrap().1.split(' ').next().unwrap().parse().unwrap());
            log.push(line);
            if let Some(addr) = addr {
                break addr;
            }
        };
        Serving { child, log, addr }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn auto_falls_back_to_epoll_when_seccomp_denies_io_uring_and_says_why() {
    let server = Serving::start(dormouse_without_io_uring(&["--listen", "127.0.0.1:0"]));
    let log = server.log.join("\n");
    assert!(server.log.last().unwrap().contains("backend=\"epoll\""), "{log}");
    let reasons: Vec<&String> = server.log.iter().filter(|line| line.contains("io_uring is unavailable")).collect();
    assert_eq!(reasons.len(), 1, "one line names the fallback: {log}");
    assert!(reasons[0].contains("using the epoll backend"), "{log}");
    assert!(reasons[0].contains("io_uring_setup: EPERM (blocked by seccomp"), "{log}");
    // It serves rooms: the embedded config's `main` party relays.
    let mut ann = Client::connect(server.addr, "/parties/main/docker?_pk=ann");
    let mut bob = Client::connect(server.addr, "/parties/main/docker?_pk=bob");
    ann.send_text("hello from a container");
    assert_eq!(bob.recv_text(), "hello from a container");
    // And says so for what it cannot serve.
    assert_eq!(http(server.addr, "GET", "/parties/nope/docker", "", "").status, 404);
}

#[test]
fn forcing_io_uring_where_it_is_denied_exits_2_with_the_reason() {
    let output = dormouse_without_io_uring(&["--listen", "127.0.0.1:0", "--io", "uring"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("io_uring_setup: EPERM (blocked by seccomp"), "{stderr}");
    assert!(!stderr.contains("dormouse listening"), "{stderr}");
}

#[test]
fn forcing_epoll_under_the_filter_needs_no_probe() {
    let server = Serving::start(dormouse_without_io_uring(&["--listen", "127.0.0.1:0", "--io", "epoll"]));
    assert!(server.log.last().unwrap().contains("backend=\"epoll\""), "{:#?}", server.log);
    assert!(!server.log.iter().any(|line| line.contains("io_uring")), "{:#?}", server.log);
    let mut ann = Client::connect(server.addr, "/parties/main/r?_pk=ann");
    let mut bob = Client::connect(server.addr, "/parties/main/r?_pk=bob");
    bob.send_text("hi ann");
    assert_eq!(ann.recv_text(), "hi ann");
}

#[test]
fn auto_picks_io_uring_where_it_works() {
    // This machine allows io_uring (the `uring::` half of the suite needs it).
    let toml = format!("listen = \"127.0.0.1:0\"\ncores = 1\ndata_dir = '{}'\n", fresh_data_dir().display());
    let server = dormouse::Server::new(dormouse::Config::from_toml(&toml).unwrap())
        .party::<dormouse::Relay>("main")
        .start()
        .unwrap();
    assert_eq!(server.backend(), "io_uring");
}
