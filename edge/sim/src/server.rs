//! The simulator's I/O shells: a Modbus TCP server, and an RTU server over any byte stream (a
//! serial port, a pty master, or a TCP connection for RTU-over-TCP).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tracing::{debug, trace, warn};

use super::faults::BusKind;
use super::model::Unit;
use constella_modbus::LineSettings;
use constella_modbus::pdu::{
    Checksum, Exception, Mbap, Reply, Request, rtu_open, rtu_request_len, rtu_seal,
};

/// The units on one simulated bus, by unit id.
pub(crate) type SharedBus = Arc<Mutex<BTreeMap<u8, Unit>>>;

/// What a unit decided about one request, with the faults that shape how it goes on the wire.
struct Answer {
    reply: Reply,
    delay: Duration,
    checksum: Checksum,
}

fn answer(bus: &SharedBus, unit_id: u8, request: &Request) -> Option<Answer> {
    let mut units = bus
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let unit = units.get_mut(&unit_id)?;
    let reply = unit.handle(request)?;
    Some(Answer {
        reply,
        delay: Duration::from_millis(unit.faults.slow_ms),
        checksum: if unit.faults.corrupt_crc {
            Checksum::Corrupted
        } else {
            Checksum::Valid
        },
    })
}

/// Serves Modbus TCP until the listener fails. Requests to unknown unit ids get exception 0x0B
/// (gateway target failed to respond), as a TCP-to-RTU gateway would answer.
pub(crate) async fn serve_tcp(listener: TcpListener, bus: SharedBus) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "simulator: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        debug!(%peer, "simulator: tcp client connected");
        let bus = bus.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_tcp_connection(stream, bus).await {
                debug!(%peer, error = %e, "simulator: tcp client gone");
            }
        });
    }
}

async fn serve_tcp_connection(
    mut stream: tokio::net::TcpStream,
    bus: SharedBus,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut header = [0u8; Mbap::LEN];
    let mut pdu = [0u8; 254];
    loop {
        stream.read_exact(&mut header).await?;
        let Some(mbap) = Mbap::parse(&header) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bad MBAP header",
            ));
        };
        let body = &mut pdu[..mbap.pdu_len];
        stream.read_exact(body).await?;
        let Some(request) = Request::parse(body) else {
            let function = body.first().copied().unwrap_or(0);
            stream
                .write_all(&mbap.seal(&Reply::Exception(function, Exception::ILLEGAL_DATA_VALUE)))
                .await?;
            continue;
        };
        let known = bus
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&mbap.unit);
        if !known {
            let reply = Reply::Exception(request.function(), Exception::GATEWAY_TARGET_FAILED);
            stream.write_all(&mbap.seal(&reply)).await?;
            continue;
        }
        let Some(answer) = answer(&bus, mbap.unit, &request) else {
            continue;
        };
        pause(answer.delay).await;
        stream.write_all(&mbap.seal(&answer.reply)).await?;
    }
}

/// How long an RTU reply takes to go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// Delay each reply by the time request and reply would take on a real wire at the line's
    /// speed (a pty moves bytes instantly).
    WireTime,
    /// Answer at once (RTU over TCP, or `--no-pace`).
    Instant,
}

/// Serves RTU frames over `io` until it closes. Frames end either at the length their function
/// code implies or at t3.5 of line silence.
pub(crate) async fn serve_rtu<S>(
    mut io: S,
    bus: SharedBus,
    line: LineSettings,
    pacing: Pacing,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let silence = line.t35().max(Duration::from_millis(2));
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 256];
    loop {
        let read = if buf.is_empty() {
            Some(io.read(&mut chunk).await?)
        } else {
            tokio::time::timeout(silence, io.read(&mut chunk))
                .await
                .ok()
                .transpose()?
        };
        match read {
            Some(0) => return Ok(()),
            Some(n) => buf.extend_from_slice(&chunk[..n]),
            None => {
                // Line silence: whatever is buffered is one frame.
                let frame = std::mem::take(&mut buf);
                serve_frame(&mut io, &bus, &frame, line, pacing).await?;
                continue;
            }
        }
        while let Some(len) = rtu_request_len(&buf).filter(|len| buf.len() >= *len) {
            let frame: Vec<u8> = buf.drain(..len).collect();
            serve_frame(&mut io, &bus, &frame, line, pacing).await?;
        }
        if buf.len() > 256 {
            trace!(bytes = buf.len(), "simulator: discarding line noise");
            buf.clear();
        }
    }
}

async fn serve_frame<S>(
    io: &mut S,
    bus: &SharedBus,
    frame: &[u8],
    line: LineSettings,
    pacing: Pacing,
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let Some((unit_id, pdu)) = rtu_open(frame) else {
        debug!(
            bytes = frame.len(),
            "simulator: dropped a frame with a bad CRC"
        );
        return Ok(());
    };
    let Some(request) = Request::parse(pdu) else {
        return Ok(());
    };
    if unit_id == 0 {
        // Broadcast: every unit acts, none answers.
        let mut units = bus
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for unit in units.values_mut() {
            let _ = unit.handle(&request);
        }
        return Ok(());
    }
    let Some(answer) = answer(bus, unit_id, &request) else {
        return Ok(());
    };
    let out = rtu_seal(unit_id, &answer.reply, answer.checksum);
    let wire = if pacing == Pacing::WireTime {
        line.wire_time(frame.len() + out.len())
    } else {
        Duration::ZERO
    };
    pause(answer.delay + wire).await;
    io.write_all(&out).await?;
    io.flush().await
}

/// Sleeps for `delay`, or not at all for zero: tokio's timer has millisecond resolution, so even
/// a zero sleep would cost up to a millisecond per reply.
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

pub(crate) fn bus_name(kind: BusKind) -> &'static str {
    match kind {
        BusKind::Tcp => "tcp",
        BusKind::Rtu => "rtu",
        BusKind::RtuTcp => "rtu-tcp",
    }
}
