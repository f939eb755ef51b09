//! The HTTP stand-in for a container image: run inside the pod's network
//! namespace (`lab pod-server`), it answers every request on its ports with
//! the pod's name, so a curl shows which pod a Service sent it to, and
//! names the client's address in a header.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};

use anyhow::{Context, Result};

/// The line printed once every port listens.
pub const LISTENING: &str = "listening";
/// The response header naming the address the request came from.
pub const CLIENT_HEADER: &str = "X-Lab-Client";

/// Listens on `ports` (IPv4 and IPv6) and answers forever.
pub fn serve(name: &str, ports: &[u16]) -> Result<()> {
    let mut listeners = Vec::new();
    for port in ports {
        // `[::]` with the kernel's default bindv6only=0 takes IPv4 too.
        let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port));
        listeners
            .push(TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?);
    }
    writeln!(std::io::stdout(), "{LISTENING} on {ports:?} as {name}")
        .context("cannot write to stdout")?;
    let mut threads = Vec::new();
    for listener in listeners {
        let body = format!("{name}\n");
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let body = body.clone();
                std::thread::spawn(move || answer(stream, &body));
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn answer(stream: TcpStream, body: &str) {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    // Read the request head up to the blank line.
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line == "\r\n" || line == "\n" {
            break;
        }
        line.clear();
    }
    // Who connected, as the pod sees it: shows whether a Service path
    // kept the client's address (externalTrafficPolicy: Local) or not.
    let peer = stream
        .peer_addr()
        .map(|a| a.ip().to_canonical().to_string())
        .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{CLIENT_HEADER}: {peer}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = &stream;
    let _ = stream.write_all(response.as_bytes());
}
