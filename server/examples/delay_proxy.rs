//! A TCP proxy that delays every byte by a fixed one-way time in each direction (a link of that
//! round trip, for `scripts/bench-kme.sh`): `delay_proxy LISTEN TARGET ONE_WAY_MS`. Two threads
//! per direction, sleeping to the microsecond (an async timer would round each hop up to its
//! millisecond tick and lengthen the round trip).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = thread::spawn(move || {
        for (at, bytes) in rx {
            let now = Instant::now();
            if at > now {
                thread::sleep(at - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0
            || tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, target, ms] = args.as_slice() else {
        eprintln!("usage: delay_proxy LISTEN TARGET ONE_WAY_MS");
        std::process::exit(2);
    };
    let delay = Duration::from_secs_f64(ms.parse::<f64>().unwrap_or(0.0) / 1000.0);
    for inbound in TcpListener::bind(listen)?.incoming() {
        let Ok(inbound) = inbound else { continue };
        let target = target.clone();
        thread::spawn(move || {
            let Ok(out) = TcpStream::connect(&target) else {
                return;
            };
            let _ = (inbound.set_nodelay(true), out.set_nodelay(true));
            let (Ok(i2), Ok(o2)) = (inbound.try_clone(), out.try_clone()) else {
                return;
            };
            let up = thread::spawn(move || pipe(inbound, out, delay));
            pipe(o2, i2, delay);
            let _ = up.join();
        });
    }
    Ok(())
}
