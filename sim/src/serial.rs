//! The serial transport of the firmware simulator: the frames the simulated firmware emits go
//! out on a real serial port or pty as they are (protocol/SPEC.md), and the frames read back are
//! handed to the firmware. Many devices share the port, as on a receiver dongle or RS-485 bus.
//!
//! Guarantees: noise on the line is skipped by the frame reader (the firmware retransmits what
//! was lost); a write the port cannot take within 100 ms is dropped, as a real UART's bytes would
//! be; a port whose other end is closed (gateway down) is read again every 50 ms, not spun on.

use crate::SimLink;
use eldergate_protocol::serial::{FrameReader, Push};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A link over `port` (a `tokio_serial::SerialStream`, either end of a pty pair, or any byte
/// stream).
pub fn serial_link<S>(port: S) -> SimLink
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(port);
    let (to_gateway, mut outgoing) = mpsc::channel::<Vec<u8>>(4_096);
    let (incoming, from_gateway) = mpsc::channel::<Vec<u8>>(4_096);
    let reader = tokio::spawn(async move {
        let mut frames = FrameReader::new();
        let mut buf = [0u8; 512];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(n) => {
                    for &b in &buf[..n] {
                        if let Push::Frame(wire) = frames.push(b) {
                            if incoming.send(wire.to_vec()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(wire) = outgoing.recv().await {
            let _ = tokio::time::timeout(Duration::from_millis(100), wr.write_all(&wire)).await;
        }
    });
    SimLink {
        to_gateway,
        from_gateway,
        tasks: vec![reader, writer],
    }
}

/// Opens `path` (8N1 at `baud`) and makes a link over it.
pub fn open_serial_link(path: &str, baud: u32) -> Result<SimLink, tokio_serial::Error> {
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(path, baud))?;
    Ok(serial_link(port))
}
