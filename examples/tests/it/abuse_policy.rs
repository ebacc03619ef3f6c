//! Policy under pressure, through the real `zt edge run` and connector processes, with
//! `zt_client` embedded in the test: a scan over allowed and denied address:port pairs
//! (only the allowed ones reach an origin; one audit line per flow), and 1,000 rule changes
//! made through the admin API while a denied destination is probed without pause (it is
//! never reached; an allowed one never fails; a new rule applies at once).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::abuse::*;
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_client::Client;

/// An origin that counts the connections it accepts and echoes `hello <request>`.
fn counting_origin(addr: SocketAddr) -> (Origin, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    let origin = Origin::spawn(&addr.to_string(), move |mut s| {
        n.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0u8; 256];
        let got = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
        let _ = std::io::Write::write_all(&mut s, b"hello ");
        let _ = std::io::Write::write_all(&mut s, &buf[..got]);
    });
    (origin, accepted)
}

/// `n` TCP ports free on every one of `ips`.
fn common_free_ports(ips: &[&str], n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < n {
        let p = free_tcp(ips[0]).port();
        if !ports.contains(&p) && ips.iter().all(|ip| TcpListener::bind((*ip, p)).is_ok()) {
            ports.push(p);
        }
    }
    ports
}

/// One request through the tunnel: `Ok` with the echo, or the dial's error text.
async fn request(client: &Client, dest: SocketAddr) -> Result<(), String> {
    let mut s = client.dial(dest).await.map_err(|e| e.to_string())?;
    s.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut back = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut back))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    if back == b"hello ping" {
        Ok(())
    } else {
        Err(format!("unexpected answer {back:?}"))
    }
}

#[test]
fn a_scan_reaches_only_the_allowed_pairs_and_each_flow_is_audited_once() {
    let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    // Three ports with an origin on every address, and one with none.
    let ports = common_free_ports(&ips, 4);
    let (listening, closed) = (&ports[..3], ports[3]);
    let mut origins = Vec::new();
    for ip in ips {
        for &p in listening {
            let addr: SocketAddr = format!("{ip}:{p}").parse().unwrap();
            let (o, n) = counting_origin(addr);
            origins.push((addr, o, n));
        }
    }

    let edge = Edge::start();
    let creds = edge.tunnel("private");
    edge.admin(&["route", "ip", "add", "127.0.0.0/29", "private"]);
    let web = edge.ip_list("Web servers", &["127.0.0.2/31"]);
    let (web_a, web_b, admin_port) = (listening[0], listening[1], listening[2]);
    edge.rule(
        "Block admin port on .4",
        10,
        "block",
        "l4",
        &format!("net.dst.ip == 127.0.0.4 and net.dst.port == {admin_port}"),
    );
    edge.rule(
        "Allow web ports",
        20,
        "allow",
        "l4",
        &format!("net.dst.ip in {web} and net.dst.port in {{{web_a} {web_b}}}"),
    );
    edge.rule(
        "Allow .4",
        30,
        "allow",
        "l4",
        "net.dst.ip in {127.0.0.4/32}",
    );
    // What the rules above mean, written out plainly: the oracle the scan is checked by.
    let allowed = |addr: SocketAddr| {
        let ip = addr.ip().to_string();
        let port = addr.port();
        if ip == "127.0.0.4" && port == admin_port {
            return false;
        }
        (["127.0.0.2", "127.0.0.3"].contains(&ip.as_str()) && [web_a, web_b].contains(&port))
            || ip == "127.0.0.4"
    };
    let connector = Connector::start(&edge, "private", &creds, "connector", 2);
    connector.wait_ready(2);

    let mut scan: Vec<SocketAddr> = Vec::new();
    for ip in ips {
        for &p in &ports {
            scan.push(format!("{ip}:{p}").parse().unwrap());
        }
    }
    let rt = runtime(2);
    let results = rt.block_on(async {
        let client = client_for(&edge, "scanner@example.com").await;
        let mut results = Vec::new();
        for &dest in &scan {
            results.push((dest, request(&client, dest).await));
        }
        client.shutdown();
        results
    });
    let mut allowed_count = 0;
    for (dest, result) in &results {
        let listening_here = dest.port() != closed;
        match (allowed(*dest), listening_here, result) {
            (true, true, Ok(())) => allowed_count += 1,
            (true, false, Err(e)) => assert!(e.contains("refused"), "{dest}: {e}"),
            (false, _, Err(e)) => assert!(e.contains("denied by rule"), "{dest}: {e}"),
            (a, l, r) => panic!("{dest}: allowed {a}, listening {l}, but the flow gave {r:?}"),
        }
    }
    // Only the allowed pairs were reached, each exactly once.
    for (addr, _, accepted) in &origins {
        let want = usize::from(allowed(*addr));
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            want,
            "{addr}: accepted connections"
        );
    }
    // One audit line per flow, with the deciding action.
    eventually("an audit line for every flow of the scan", || {
        (audit_lines(&edge, "flow").len() >= scan.len()).then_some(())
    });
    // Give a duplicate line time to show up, if there were one.
    std::thread::sleep(Duration::from_millis(500));
    let lines = audit_lines(&edge, "flow");
    assert_eq!(
        lines.len(),
        scan.len(),
        "one audit line per flow: {lines:#?}"
    );
    for dest in &scan {
        let mine: Vec<_> = lines
            .iter()
            .filter(|l| l["destination"] == dest.to_string())
            .collect();
        assert_eq!(mine.len(), 1, "{dest}: {mine:#?}");
        let want = if allowed(*dest) { "allow" } else { "block" };
        assert_eq!(mine[0]["action"], want, "{dest}: {}", mine[0]);
    }
    eprintln!(
        "MEASURED policy scan: {} pairs, {allowed_count} reached (as the rules allow), {} refused, {} audit lines",
        scan.len(),
        scan.len() - allowed_count,
        lines.len()
    );
}

#[test]
fn a_thousand_rule_changes_never_let_a_denied_flow_through() {
    let changes: usize = std::env::var("ZT_RELOAD_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let (allowed_origin, allowed_hits) = counting_origin("127.0.0.2:0".parse().unwrap());
    let (denied_origin, denied_hits) = counting_origin("127.0.0.3:0".parse().unwrap());
    let (later_origin, _) = counting_origin("127.0.0.4:0".parse().unwrap());

    let edge = Edge::start();
    let creds = edge.tunnel("private");
    edge.admin(&["route", "ip", "add", "127.0.0.0/29", "private"]);
    let pair = edge.ip_list("App pair", &["127.0.0.2/31"]);
    // The allow rule covers the denied address too: only the block rule, which runs
    // first, keeps it out. A reload that ever applied the allow without the block, or
    // an empty rule set with an allow default, would let a probe through.
    edge.rule("block-d", 10, "block", "l4", "net.dst.ip == 127.0.0.3");
    edge.rule(
        "allow-apps",
        100,
        "allow",
        "l4",
        &format!("net.dst.ip in {pair}"),
    );
    let connector = Connector::start(&edge, "private", &creds, "connector", 2);
    connector.wait_ready(2);

    let rt = runtime(2);
    let client = Arc::new(rt.block_on(client_for(&edge, "prober@example.com")));
    let stop = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(AtomicUsize::new(0));
    let allowed_ok = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (client, stop, probes, dest) = (
            client.clone(),
            stop.clone(),
            probes.clone(),
            denied_origin.addr,
        );
        rt.spawn(async move {
            let mut wrong = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                probes.fetch_add(1, Ordering::Relaxed);
                match request(&client, dest).await {
                    Err(e) if e.contains("denied by rule block-d") => {}
                    other => wrong.push(format!("{other:?}")),
                }
            }
            wrong
        })
    };
    let checker = {
        let (client, stop, ok, dest) = (
            client.clone(),
            stop.clone(),
            allowed_ok.clone(),
            allowed_origin.addr,
        );
        rt.spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match request(&client, dest).await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        })
    };

    // The changes: each one a committed admin API call that swaps the edge's rule set.
    let started = Instant::now();
    for i in 0..changes {
        let (rule, body) = match i % 4 {
            0 => (
                "allow-apps",
                r#"{"traffic":"net.dst.ip in {127.0.0.2/31}"}"#.to_owned(),
            ),
            1 => (
                "block-d",
                r#"{"precedence":20,"description":"moved"}"#.to_owned(),
            ),
            2 => (
                "allow-apps",
                format!(r#"{{"traffic":"net.dst.ip in {pair}"}}"#),
            ),
            _ => (
                "block-d",
                r#"{"precedence":10,"description":""}"#.to_owned(),
            ),
        };
        let (status, answer) =
            admin_call(&edge, "PATCH", &format!("/v1/rules/{rule}"), Some(&body));
        assert_eq!(status, 200, "change {i} ({rule} {body}): {answer}");
    }
    let changing = started.elapsed();

    // A new rule: how long until a flow it allows goes through.
    let body = r#"{"name":"allow-later","precedence":5,"action":"allow","traffic":"net.dst.ip == 127.0.0.4"}"#;
    let asked = Instant::now();
    let (status, answer) = admin_call(&edge, "POST", "/v1/rules", Some(body));
    let answered = asked.elapsed();
    assert_eq!(status, 201, "{answer}");
    let applied = rt.block_on(async {
        loop {
            if request(&client, later_origin.addr).await.is_ok() {
                return asked.elapsed();
            }
            assert!(asked.elapsed() < DEADLINE, "the new rule never applied");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });

    stop.store(true, Ordering::Relaxed);
    let wrong = rt.block_on(prober).unwrap();
    let failures = rt.block_on(checker).unwrap();
    client.shutdown();
    let probes = probes.load(Ordering::Relaxed);
    eprintln!(
        "MEASURED reload race: {changes} rule changes in {changing:?} ({:.0} per second); \
         {probes} probes of the denied address, {} reached it; {} flows to the allowed address, {} failed; \
         a new rule was answered in {answered:?} and carried its first flow {applied:?} after it was sent",
        changes as f64 / changing.as_secs_f64(),
        denied_hits.load(Ordering::SeqCst),
        allowed_ok.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(wrong.is_empty(), "probes not denied by block-d: {wrong:?}");
    assert_eq!(
        denied_hits.load(Ordering::SeqCst),
        0,
        "the denied origin was reached"
    );
    assert!(probes >= 100, "only {probes} probes ran during the changes");
    assert!(
        failures.is_empty(),
        "allowed flows failed during the changes: {failures:?}"
    );
    assert!(allowed_hits.load(Ordering::SeqCst) > 0);
}

#[test]
fn a_host_header_split_across_writes_is_still_matched() {
    // An origin that keeps every byte it receives.
    let received = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let r = received.clone();
    let origin = Origin::spawn("127.0.0.2:0", move |mut s| {
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        while let Ok(n) = std::io::Read::read(&mut s, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.ends_with(b"\r\n\r\n") {
                let _ = std::io::Write::write_all(&mut s, b"HTTP/1.1 204 No Content\r\n\r\n");
                break;
            }
        }
        r.lock().unwrap().extend_from_slice(&got);
    });
    let edge = Edge::start();
    let creds = edge.tunnel("private");
    edge.admin(&["route", "ip", "add", "127.0.0.0/29", "private"]);
    edge.rule("Allow", 100, "allow", "l4", "net.dst.ip in {127.0.0.0/29}");
    edge.rule(
        "Block by host",
        10,
        "block",
        "http",
        "http.request.host == \"blocked.example\"",
    );
    let connector = Connector::start(&edge, "private", &creds, "connector", 1);
    connector.wait_ready(1);
    let rt = runtime(2);
    let outcomes = rt.block_on(async {
        let client = client_for(&edge, "splitter@example.com").await;
        let mut outcomes = Vec::new();
        for (host, pieces) in [
            ("blocked.example", 1),
            ("blocked.example", 2),
            ("blocked.example", 3),
            ("good.example", 2),
        ] {
            let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            // Cut inside the host name (and, for three pieces, inside "Host:" as well).
            let cuts: Vec<usize> = match pieces {
                1 => vec![],
                2 => vec![request.find(host).unwrap() + 7],
                _ => vec![18, request.find(host).unwrap() + 3],
            };
            let mut s = client.dial(origin.addr).await.unwrap();
            let mut start = 0;
            for cut in cuts.into_iter().chain([request.len()]) {
                s.write_all(&request.as_bytes()[start..cut]).await.unwrap();
                s.flush().await.unwrap();
                start = cut;
                // Long enough that the piece travels on its own, well inside the edge's
                // first-bytes wait (300 ms).
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            let mut answer = Vec::new();
            let result = tokio::time::timeout(DEADLINE, s.read_to_end(&mut answer))
                .await
                .unwrap();
            outcomes.push((
                host,
                pieces,
                result.map(|_| answer).map_err(|e| e.to_string()),
            ));
        }
        client.shutdown();
        outcomes
    });
    for (host, pieces, outcome) in &outcomes {
        eprintln!("MEASURED host {host} in {pieces} piece(s): {outcome:?}");
        if *host == "blocked.example" {
            assert!(
                outcome.is_err(),
                "{host} in {pieces} piece(s) got through: {outcome:?}"
            );
        } else {
            assert_eq!(
                outcome.as_deref().unwrap(),
                b"HTTP/1.1 204 No Content\r\n\r\n",
                "{host} in {pieces} piece(s)"
            );
        }
    }
    let seen = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(
        !seen.contains("blocked"),
        "a blocked request reached the origin: {seen:?}"
    );
    assert!(seen.contains("Host: good.example"), "{seen:?}");
    let denied = || {
        audit_lines(&edge, "flow")
            .into_iter()
            .filter(|l| l["rule_name"] == "Block by host")
            .count()
    };
    eventually("three audited denials", || (denied() >= 3).then_some(()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(denied(), 3, "one audited denial per blocked request");
}
