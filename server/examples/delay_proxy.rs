//! A TCP proxy that delays every byte by a fixed one-way time in each direction (a link of that
//! round trip, for `scripts/bench-kme.sh`): `delay_proxy LISTEN TARGET ONE_WAY_MS`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, target, ms] = args.as_slice() else {
        eprintln!("usage: delay_proxy LISTEN TARGET ONE_WAY_MS");
        std::process::exit(2);
    };
    let delay = Duration::from_secs_f64(ms.parse::<f64>().unwrap_or(0.0) / 1000.0);
    let l = TcpListener::bind(listen).await?;
    loop {
        let (inbound, _) = l.accept().await?;
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(out) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = (inbound.set_nodelay(true), out.set_nodelay(true));
            let (ir, iw) = inbound.into_split();
            let (or, ow) = out.into_split();
            tokio::join!(pipe(ir, ow, delay), pipe(or, iw, delay));
        });
    }
}
