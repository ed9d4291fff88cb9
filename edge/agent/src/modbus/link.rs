//! One open connection to a bus (a serial port, a TCP stream, or any byte stream), over
//! tokio-modbus, and the classification of what went wrong.
//!
//! tokio-modbus's RTU decoder drops bytes with a bad CRC and keeps waiting, so a garbled reply
//! surfaces as a timeout. The [`Tapped`] transport keeps the bytes that arrived for the current
//! request, which is how a timeout with bytes on the line is told apart from silence.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_modbus::Slave;
use tokio_modbus::client::Client as _;
use tokio_modbus::prelude::{Request, Response, SlaveContext as _};
use tokio_serial::SerialStream;

use crate::outcome::{ErrorClass, PollError};
use crate::{config, serial};
use constella_kub1063::Table;
use constella_modbus::UnitId;
use constella_modbus::pdu::CRC as RTU_CRC;
use constella_modbus::plan::Block;

/// An open link to a bus.
pub(crate) struct Link {
    ctx: tokio_modbus::client::Context,
    tap: Arc<Mutex<TapState>>,
    rtu: bool,
}

/// Any byte stream a link can run over: what tests attach in memory.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for S {}

/// How requests are framed on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Address + PDU + CRC-16, delimited by line silence.
    Rtu,
    /// MBAP header + PDU.
    Tcp,
}

impl Link {
    /// Opens the configured serial port or TCP connection.
    pub(crate) async fn connect(link: &config::Link, timeout: Duration) -> anyhow::Result<Link> {
        Ok(match link {
            config::Link::Rtu { path, line } => {
                Link::over(Transport::Serial(serial::open(path, line)?), Framing::Rtu)
            }
            config::Link::Tcp { addr } => Link::over(
                Transport::Tcp(connect_tcp(addr, timeout).await?),
                Framing::Tcp,
            ),
            config::Link::RtuOverTcp { addr } => Link::over(
                Transport::Tcp(connect_tcp(addr, timeout).await?),
                Framing::Rtu,
            ),
        })
    }

    /// A link over any byte stream (an in-memory pipe in tests).
    pub(crate) fn attach(stream: Box<dyn ByteStream>, framing: Framing) -> Link {
        Link::over(Transport::Stream(stream), framing)
    }

    fn over(inner: Transport, framing: Framing) -> Link {
        let tap = Arc::new(Mutex::new(TapState::default()));
        let transport = Tapped {
            inner,
            tap: tap.clone(),
        };
        let ctx = match framing {
            Framing::Rtu => tokio_modbus::client::rtu::attach(transport),
            Framing::Tcp => tokio_modbus::client::tcp::attach(transport),
        };
        Link {
            ctx,
            tap,
            rtu: framing == Framing::Rtu,
        }
    }

    /// Whether the link survives `error`. Only silence on an RTU line leaves it usable (the next
    /// request clears the decoder's buffer). After a decode error tokio-modbus's framed stream is
    /// finished, and a TCP stream may still deliver a late reply to the wrong transaction, so both
    /// are reopened; reopening a serial port also flushes stale input.
    pub(crate) fn survives(&self, error: &PollError) -> bool {
        match error.class() {
            ErrorClass::Exception => true,
            ErrorClass::Timeout => self.rtu,
            ErrorClass::CrcFraming | ErrorClass::Io => false,
        }
    }

    /// Reads one block; checks that the reply has exactly the words asked for.
    pub(crate) async fn read(
        &mut self,
        unit: UnitId,
        block: Block,
        timeout: Duration,
    ) -> Result<Vec<u16>, PollError> {
        let request = match block.table {
            Table::Input => Request::ReadInputRegisters(block.start.0, block.count),
            Table::Holding => Request::ReadHoldingRegisters(block.start.0, block.count),
        };
        match self.call(unit, request, timeout).await? {
            Response::ReadInputRegisters(words) | Response::ReadHoldingRegisters(words)
                if words.len() == usize::from(block.count) =>
            {
                Ok(words)
            }
            other => Err(PollError::Framing(format!("unexpected reply {other:?}"))),
        }
    }

    /// FC06 write; the echo of address and value is verified (tokio-modbus checks it only in debug
    /// builds).
    pub(crate) async fn write_single(
        &mut self,
        unit: UnitId,
        addr: u16,
        value: u16,
        timeout: Duration,
    ) -> Result<(), PollError> {
        match self
            .call(unit, Request::WriteSingleRegister(addr, value), timeout)
            .await?
        {
            Response::WriteSingleRegister(a, v) if a == addr && v == value => Ok(()),
            Response::WriteSingleRegister(a, v) => Err(PollError::Framing(format!(
                "write echo {a:#06x}={v} does not match {addr:#06x}={value}"
            ))),
            other => Err(PollError::Framing(format!("unexpected reply {other:?}"))),
        }
    }

    async fn call(
        &mut self,
        unit: UnitId,
        request: Request<'static>,
        timeout: Duration,
    ) -> Result<Response, PollError> {
        let result = self.call_once(unit, request.clone(), timeout).await;
        match result {
            // On a shared RTU line a reply from another unit is a late answer to an earlier
            // request, not this unit's fault: discard it and ask once more.
            Err(StaleOrError::Stale(detail)) if self.rtu => {
                tracing::debug!(%unit, %detail, "discarded a stale reply from another unit");
                self.flush_input_before_next_frame();
                self.call_once(unit, request, timeout)
                    .await
                    .map_err(StaleOrError::into_poll_error)
            }
            other => other.map_err(StaleOrError::into_poll_error),
        }
    }

    /// After a timeout on an RTU line the unit may still answer: the line stays quiet for one
    /// more `timeout` (returned) and whatever arrived meanwhile is discarded before the next frame,
    /// so a late reply cannot be taken for the next unit's. A TCP link is reopened instead.
    pub(crate) fn late_reply_guard(&mut self, timeout: Duration) -> Duration {
        if !self.rtu {
            return Duration::ZERO;
        }
        self.flush_input_before_next_frame();
        timeout
    }

    fn flush_input_before_next_frame(&mut self) {
        self.tap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .flush_pending = true;
    }

    async fn call_once(
        &mut self,
        unit: UnitId,
        request: Request<'static>,
        timeout: Duration,
    ) -> Result<Response, StaleOrError> {
        self.tap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .received
            .clear();
        self.ctx.set_slave(Slave(unit.get()));
        let error = match tokio::time::timeout(timeout, self.ctx.call(request)).await {
            Err(_elapsed) => self.classify_timeout(timeout),
            Ok(Ok(Ok(response))) => return Ok(response),
            Ok(Ok(Err(code))) => PollError::Exception(u8::from(code)),
            Ok(Err(tokio_modbus::Error::Protocol(
                e @ tokio_modbus::ProtocolError::HeaderMismatch { .. },
            ))) => {
                return Err(StaleOrError::Stale(e.to_string()));
            }
            Ok(Err(tokio_modbus::Error::Protocol(e))) => PollError::Framing(e.to_string()),
            Ok(Err(tokio_modbus::Error::Transport(e))) => match e.kind() {
                io::ErrorKind::InvalidData if self.rtu => self.classify_garbled(&e.to_string()),
                io::ErrorKind::InvalidData => PollError::Framing(e.to_string()),
                io::ErrorKind::TimedOut => PollError::Timeout(timeout),
                _ => PollError::Io(e.to_string()),
            },
        };
        Err(StaleOrError::Error(error))
    }

    fn classify_timeout(&self, timeout: Duration) -> PollError {
        let tap = self
            .tap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let empty = tap.received.is_empty();
        drop(tap);
        if empty {
            PollError::Timeout(timeout)
        } else {
            self.classify_garbled("no complete reply")
        }
    }

    /// Bytes arrived but no valid frame: a frame-sized reply whose CRC does not match is a CRC
    /// error; anything else is a framing error. tokio-modbus reports such a reply either as a
    /// timeout (still waiting for a valid frame) or, after 20 resync attempts, as invalid data.
    fn classify_garbled(&self, detail: &str) -> PollError {
        let tap = self
            .tap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = &tap.received;
        let crc_mismatch = self.rtu
            && bytes.len() >= 4
            && bytes.len() < MAX_TAPPED
            && RTU_CRC.checksum(&bytes[..bytes.len() - 2]).to_le_bytes()
                != bytes[bytes.len() - 2..];
        if crc_mismatch {
            PollError::Crc
        } else {
            PollError::Framing(format!("{detail} ({} byte(s) received)", bytes.len()))
        }
    }
}

async fn connect_tcp(addr: &str, timeout: Duration) -> anyhow::Result<TcpStream> {
    let stream = tokio::time::timeout(
        timeout.max(Duration::from_secs(1)),
        TcpStream::connect(addr),
    )
    .await
    .with_context(|| format!("Timed out connecting to {addr}"))?
    .with_context(|| format!("Failed to connect to {addr}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A failed exchange: a reply that belongs to another request, or a real error.
enum StaleOrError {
    Stale(String),
    Error(PollError),
}

impl StaleOrError {
    fn into_poll_error(self) -> PollError {
        match self {
            StaleOrError::Stale(detail) => PollError::Framing(detail),
            StaleOrError::Error(error) => error,
        }
    }
}

/// Bytes received since the current request was sent (capped at one maximal RTU frame), and
/// whether waiting input is to be discarded before the next frame goes out.
#[derive(Debug, Default)]
struct TapState {
    received: Vec<u8>,
    flush_pending: bool,
}

const MAX_TAPPED: usize = 256;

enum Transport {
    Serial(SerialStream),
    Tcp(TcpStream),
    Stream(Box<dyn ByteStream>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Serial(_) => "Serial",
            Transport::Tcp(_) => "Tcp",
            Transport::Stream(_) => "Stream",
        })
    }
}

impl Transport {
    /// Drops input that is already waiting (a late reply), without blocking.
    fn discard_input(&mut self) -> io::Result<()> {
        match self {
            Transport::Serial(s) => {
                tokio_serial::SerialPort::clear(s, tokio_serial::ClearBuffer::Input)
                    .map_err(|e| io::Error::other(e.to_string()))
            }
            Transport::Tcp(s) => {
                let mut scratch = [0u8; 256];
                loop {
                    match s.try_read(&mut scratch) {
                        Ok(0) => return Ok(()),
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
            }
            Transport::Stream(s) => {
                // Poll without waiting: whatever is ready now is stale.
                let mut scratch = [0u8; 256];
                let mut cx = Context::from_waker(std::task::Waker::noop());
                loop {
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut *s).poll_read(&mut cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                        Poll::Ready(Err(e)) => return Err(e),
                        Poll::Ready(Ok(())) | Poll::Pending => return Ok(()),
                    }
                }
            }
        }
    }
}

/// A transport that records what it reads into the shared [`TapState`].
#[derive(Debug)]
struct Tapped {
    inner: Transport,
    tap: Arc<Mutex<TapState>>,
}

impl AsyncRead for Tapped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = match &mut this.inner {
            Transport::Serial(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Stream(s) => Pin::new(s).poll_read(cx, buf),
        };
        if let Poll::Ready(Ok(())) = poll {
            let new = &buf.filled()[before..];
            let mut tap = this
                .tap
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let room = MAX_TAPPED.saturating_sub(tap.received.len());
            tap.received.extend_from_slice(&new[..new.len().min(room)]);
        }
        poll
    }
}

impl AsyncWrite for Tapped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let flush = std::mem::take(
            &mut this
                .tap
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .flush_pending,
        );
        if flush {
            this.inner.discard_input()?;
        }
        match &mut this.inner {
            Transport::Serial(s) => Pin::new(s).poll_write(cx, data),
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Transport::Stream(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Transport::Serial(s) => Pin::new(s).poll_flush(cx),
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Stream(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Transport::Serial(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Stream(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
