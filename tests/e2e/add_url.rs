//! `ADD <url>` as BuildKit does it: downloaded, named after the URL, mode 0600, mtime from
//! Last-Modified, never extracted, `--checksum` verified and used as the cache key. Files
//! come from a tiny HTTP server inside the test on 127.0.0.1, so no outside network.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::forgetest;
use crate::harness::busybox_tarball;

/// `Last-Modified` of every file served, and its Unix time.
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const LAST_MODIFIED_UNIX: &str = "784111777";

/// Serves `files` (path -> body) over HTTP/1.1 on 127.0.0.1, one connection at a time; any
/// other path is a 404. Counts the requests it answers.
struct Server {
    base: String,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let (f, r) = (files.clone(), requests.clone());
        // Detached: it blocks in accept until the test process exits.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                r.fetch_add(1, Ordering::SeqCst);
                let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
                let body = f.lock().unwrap().get(&path).cloned();
                let (status, body) = match body {
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", b"not here\n".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        Server {
            base,
            files,
            requests,
        }
    }

    fn serve(&self, path: &str, body: &[u8]) -> String {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_owned(), body.to_vec());
        format!("{}{path}", self.base)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

forgetest!(add_url_is_named_after_the_url_or_the_dest, |t| {
    let server = Server::start();
    let tool = server.serve("/releases/v1/tool.txt", b"tool\n");
    let other = server.serve("/other.txt?x=1", b"other\n");
    t.dockerfile(&format!(
        "FROM busybox:latest\n\
         ADD {tool} /dl/\n\
         ADD {other} /renamed.txt\n\
         ADD --chown=app --chmod=644 {tool} /owned/\n"
    ));
    t.build_ok(&["-t", "url:1"]);
    let out = t.sh(
        "url:1",
        "cat /dl/tool.txt /renamed.txt; ls /dl; \
         stat -c '%a %u %Y' /dl/tool.txt /renamed.txt /owned/tool.txt",
    );
    assert_eq!(
        out,
        format!(
            "tool\nother\ntool.txt\n\
             600 0 {LAST_MODIFIED_UNIX}\n600 0 {LAST_MODIFIED_UNIX}\n644 1000 {LAST_MODIFIED_UNIX}\n"
        )
    );
});

forgetest!(add_url_checksum_is_verified, |t| {
    let server = Server::start();
    let body = b"checked content\n";
    let url = server.serve("/c.txt", body);
    let right = sha256(body);
    t.dockerfile(&format!(
        "FROM busybox:latest\nADD --checksum={right} {url} /c.txt\n"
    ));
    t.build_ok(&["-t", "sum:1"]);
    assert_eq!(t.sh("sum:1", "cat /c.txt"), "checked content\n");

    let wrong = sha256(b"something else");
    t.dockerfile(&format!(
        "FROM busybox:latest\nADD --checksum={wrong} {url} /c.txt\n"
    ));
    let run = t.build_err(&[]);
    for needle in [url.as_str(), right.as_str(), wrong.as_str(), "Dockerfile:2"] {
        assert!(
            run.stderr.contains(needle),
            "no {needle:?} in:\n{}",
            run.stderr
        );
    }
});

forgetest!(add_url_with_checksum_is_cached_without_a_download, |t| {
    let server = Server::start();
    let body = b"pinned\n";
    let url = server.serve("/pinned.txt", body);
    t.dockerfile(&format!(
        "FROM busybox:latest\nADD --checksum={} {url} /p.txt\n",
        sha256(body)
    ));
    let first = t.build_ok(&[]);
    assert!(!first.step("ADD").cached, "{}", first.log);
    assert_eq!(server.requests(), 1);
    let second = t.build_ok(&[]);
    assert!(second.step("ADD").cached, "{}", second.log);
    assert_eq!(
        server.requests(),
        1,
        "a cached ADD --checksum contacted the server"
    );
});

forgetest!(
    add_url_without_checksum_reruns_when_the_content_changes,
    |t| {
        let server = Server::start();
        let url = server.serve("/v.txt", b"one\n");
        t.dockerfile(&format!(
            "FROM busybox:latest\nADD {url} /v.txt\nRUN cat /v.txt > /copy\n"
        ));
        t.build_ok(&[]);
        // Same content: fetched again (the key is what the URL serves), and cached.
        let same = t.build_ok(&[]);
        assert_eq!(server.requests(), 2);
        assert!(same.step("ADD").cached, "{}", same.log);

        server.serve("/v.txt", b"two\n");
        let changed = t.build_ok(&["-t", "v:2"]);
        let add = changed.step("ADD");
        assert!(!add.cached, "{}", changed.log);
        let reason = add.miss.unwrap_or_default();
        assert!(
            reason.contains(&url) && reason.contains("changed"),
            "miss reason {reason:?}"
        );
        assert_eq!(t.sh("v:2", "cat /v.txt /copy"), "two\ntwo\n");
    }
);

forgetest!(add_url_of_an_archive_is_not_extracted, |t| {
    let server = Server::start();
    let tarball = std::fs::read(busybox_tarball()).unwrap();
    let url = server.serve("/rootfs.tar.gz", &tarball);
    t.dockerfile(&format!("FROM busybox:latest\nADD {url} /t/\n"));
    t.build_ok(&["-t", "tgz:1"]);
    let out = t.sh("tgz:1", "ls /t; wc -c < /t/rootfs.tar.gz");
    assert_eq!(out, format!("rootfs.tar.gz\n{}\n", tarball.len()));
});

forgetest!(add_url_that_is_not_found_fails_naming_url_and_status, |t| {
    let server = Server::start();
    let url = format!("{}/missing.bin", server.base);
    t.dockerfile(&format!("FROM busybox:latest\nADD {url} /m\n"));
    let run = t.build_err(&[]);
    for needle in [url.as_str(), "404", "Dockerfile:2"] {
        assert!(
            run.stderr.contains(needle),
            "no {needle:?} in:\n{}",
            run.stderr
        );
    }
});

forgetest!(add_checksum_of_a_context_file_is_refused, |t| {
    t.write("local.txt", "local\n");
    t.dockerfile(&format!(
        "FROM busybox:latest\nADD --checksum={} local.txt /l\n",
        sha256(b"local\n")
    ));
    let run = t.build_err(&[]);
    for needle in ["Dockerfile:2", "local.txt", "--checksum"] {
        assert!(
            run.stderr.contains(needle),
            "no {needle:?} in:\n{}",
            run.stderr
        );
    }
});

forgetest!(
    add_of_a_url_and_another_source_needs_a_directory_dest,
    |t| {
        let server = Server::start();
        let url = server.serve("/u.txt", b"u\n");
        t.write("local.txt", "local\n");
        t.dockerfile(&format!(
            "FROM busybox:latest\nADD local.txt {url} /notadir\n"
        ));
        let run = t.build_err(&[]);
        for needle in ["Dockerfile:2", "must be a directory", "/notadir"] {
            assert!(
                run.stderr.contains(needle),
                "no {needle:?} in:\n{}",
                run.stderr
            );
        }
        t.dockerfile(&format!(
            "FROM busybox:latest\nADD local.txt {url} /both/\n"
        ));
        t.build_ok(&["-t", "both:1"]);
        assert_eq!(
            t.sh("both:1", "cat /both/local.txt /both/u.txt"),
            "local\nu\n"
        );
    }
);
