//! The overlay as an interface of the operating system (`--tun`): a TUN device that holds this
//! node's overlay address and routes the overlay's network, so `ip a` lists it and the
//! kernel's `ping` and programs reach peers through the overlay. Creating it needs
//! CAP_NET_ADMIN; nothing else in the overlay needs a privilege. Which arriving packets the
//! kernel gets, and which smoltcp keeps, is decided in `host`.

use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tokio::io::unix::AsyncFd;

use crate::device::MTU;

pub(crate) struct OsInterface {
    device: AsyncFd<tun::Device>,
}

impl OsInterface {
    /// Creates the TUN device `name` with `address` in `network`, up, with the overlay's MTU.
    pub(crate) fn create(name: &str, address: Ipv4Addr, network: Ipv4Net) -> io::Result<Self> {
        let mut config = tun::Configuration::default();
        config
            .tun_name(name)
            .address(address)
            .netmask(network.netmask())
            .mtu(MTU as u16)
            .up();
        let device = tun::create(&config).map_err(|error| {
            io::Error::other(format!(
                "could not create the TUN interface {name} (it needs CAP_NET_ADMIN): {error}"
            ))
        })?;
        device.set_nonblock()?;
        #[expect(
            deprecated,
            reason = "the safe constructor is deprecated for types that could swap their fd; \
                      tun::Device owns one fd for its whole life, and the workspace denies unsafe"
        )]
        let device = AsyncFd::new(device)?;
        Ok(OsInterface { device })
    }

    /// Waits until the kernel has a packet for the overlay, then reads up to `batch` of them.
    pub(crate) async fn read_batch(
        &self,
        buffer: &mut [u8],
        batch: usize,
        mut take: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<()> {
        let mut guard = self.device.readable().await?;
        for _ in 0..batch {
            match guard.try_io(|device| device.get_ref().recv(buffer)) {
                Ok(Ok(length)) => {
                    if !take(&buffer[..length]) {
                        break;
                    }
                }
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => break,
            }
        }
        Ok(())
    }

    /// Hands a packet to the kernel; `false` when the device cannot take it now (then wait
    /// for `writable`). A packet the kernel refuses for good is dropped and logged.
    pub(crate) fn try_send(&self, packet: &[u8]) -> bool {
        match self.device.get_ref().send(packet) {
            Ok(_) => true,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => false,
            Err(error) => {
                tracing::debug!(%error, "TUN write");
                true
            }
        }
    }

    /// Waits until the device can take packets again after `try_send` said it could not.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        let mut guard = self.device.writable().await?;
        // `try_send` bypassed the readiness tracking, so clear it here: the next wait then
        // lasts until the kernel really has room.
        guard.clear_ready();
        Ok(())
    }
}
