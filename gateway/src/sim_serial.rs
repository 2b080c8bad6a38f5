//! Simulated serial alarm buttons that run the real firmware logic (`eldergate-firmware`) on the
//! host: each button is an `AlarmButton` whose input pin is scripted (a "senior" presses it now
//! and then), talking to the gateway over a real serial port or pty.

use eldergate_firmware::button::{AlarmButton, Timing};
use eldergate_protocol::serial::{decode, Body, FrameReader, Push, MAX_WIRE};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A button input driven by the simulation (pressed = low, as on the hardware).
#[derive(Clone, Default)]
pub struct ScriptedButton(Arc<AtomicBool>);

impl ScriptedButton {
    /// Holds the button down (true) or lets it go.
    pub fn set_pressed(&self, pressed: bool) {
        self.0.store(pressed, Ordering::Relaxed);
    }
}

impl embedded_hal::digital::ErrorType for ScriptedButton {
    type Error = Infallible;
}

impl embedded_hal::digital::InputPin for ScriptedButton {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(!self.0.load(Ordering::Relaxed))
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(self.0.load(Ordering::Relaxed))
    }
}

/// An LED nobody looks at.
pub struct NoLed;

impl embedded_hal::digital::ErrorType for NoLed {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for NoLed {
    fn set_low(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// One simulated button: its id, its pin, and the firmware.
pub struct SimButton {
    /// Device id.
    pub id: String,
    /// The pin the simulation presses.
    pub pin: ScriptedButton,
    /// The firmware.
    pub firmware: AlarmButton<ScriptedButton, NoLed, 8>,
}

impl SimButton {
    /// A button whose first event gets `first_seq`.
    pub fn new(id: &str, first_seq: u32) -> SimButton {
        let pin = ScriptedButton::default();
        SimButton {
            id: id.into(),
            firmware: AlarmButton::new(pin.clone(), NoLed, Timing::default(), first_seq),
            pin,
        }
    }
}

/// Runs the buttons on `port` until `stop` resolves: polls the firmware every 10 ms, writes the
/// frames it wants sent, hands ACKs back to it. `press` is called every tick and may press or
/// release pins.
pub async fn run_on_port<S>(
    port: S,
    mut buttons: Vec<SimButton>,
    mut press: impl FnMut(&[SimButton], Duration) + Send,
    stop: impl std::future::Future<Output = ()>,
) -> Vec<SimButton>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(port);
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<(String, u32)>();
    let reader = tokio::spawn(async move {
        let mut fr = FrameReader::new();
        let mut buf = [0u8; 512];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(n) => {
                    for &b in &buf[..n] {
                        if let Push::Frame(w) = fr.push(b) {
                            if let Ok(f) = decode(w) {
                                if f.body == Body::Ack {
                                    let _ = ack_tx.send((f.device.to_string(), f.seq));
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let now = start.elapsed();
        press(&buttons, now);
        let now_ms = now.as_millis() as u64;
        while let Ok((device, seq)) = ack_rx.try_recv() {
            if let Some(b) = buttons.iter_mut().find(|b| b.id == device) {
                b.firmware.on_ack(seq, now_ms);
            }
        }
        let mut out = [0u8; MAX_WIRE];
        for b in buttons.iter_mut() {
            let Ok(Some(n)) = b.firmware.poll(&b.id, now_ms, &mut out) else {
                continue;
            };
            // A full line buffer loses bytes, as a real UART would: the firmware retransmits.
            let _ = tokio::time::timeout(Duration::from_millis(100), wr.write_all(&out[..n])).await;
        }
    }
    reader.abort();
    buttons
}
