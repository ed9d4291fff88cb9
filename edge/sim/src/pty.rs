//! A pseudo-terminal pair owned by the simulator: it serves on the master side, and the agent (or
//! any Modbus master) opens the slave path as if it were a serial port.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use anyhow::Context as _;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The master end. The slave end stays open here too, so the pair survives the agent closing and
/// reopening its side (as it does after an I/O error).
pub(crate) struct PtyMaster {
    master: AsyncFd<OwnedFd>,
    _slave: OwnedFd,
    slave_path: PathBuf,
    link: Option<PathBuf>,
}

impl PtyMaster {
    /// Opens a raw pty pair; with `link`, a symlink at that path points at the slave device.
    pub(crate) fn open(link: Option<&Path>) -> anyhow::Result<PtyMaster> {
        let pair =
            nix::pty::openpty(None, None).context("Failed to open a pseudo-terminal pair")?;
        let mut termios = tcgetattr(&pair.slave).context("Failed to read pty settings")?;
        cfmakeraw(&mut termios);
        tcsetattr(&pair.slave, SetArg::TCSANOW, &termios).context("Failed to make the pty raw")?;
        let flags = OFlag::from_bits_truncate(fcntl(&pair.master, FcntlArg::F_GETFL)?);
        fcntl(&pair.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        let slave_path =
            nix::unistd::ttyname(&pair.slave).context("Failed to name the pty slave")?;
        if let Some(link) = link {
            let _ = std::fs::remove_file(link);
            std::os::unix::fs::symlink(&slave_path, link).with_context(|| {
                format!(
                    "Failed to link {} to {}",
                    link.display(),
                    slave_path.display()
                )
            })?;
        }
        // SAFETY: an OwnedFd is a valid open descriptor that nothing else can close or replace;
        // the AsyncFd owns it for its whole life, so `as_raw_fd` always returns that descriptor.
        #[expect(
            unsafe_code,
            reason = "AsyncFd::register is the only non-deprecated constructor"
        )]
        let master = unsafe { AsyncFd::register(pair.master) }
            .map_err(|e| anyhow::anyhow!("Failed to register the pty with the reactor: {e}"))?;
        Ok(PtyMaster {
            master,
            _slave: pair.slave,
            slave_path,
            link: link.map(Path::to_path_buf),
        })
    }

    /// The path a Modbus master opens: the link if one was made, else the slave device.
    pub(crate) fn path(&self) -> &Path {
        self.link.as_deref().unwrap_or(&self.slave_path)
    }
}

impl Drop for PtyMaster {
    fn drop(&mut self) {
        if let Some(link) = &self.link {
            let _ = std::fs::remove_file(link);
        }
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.master.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_fd(), unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.master.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
