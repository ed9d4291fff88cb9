//! The device table: what the poller last learned about each configured device, shared with the
//! API. Pollers write, the API reads; each device's entry is replaced under a short lock.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use constella_api::{BusName, DeviceName};
use constella_kub1063::{Image, RegisterAddr, Table};
use constella_modbus::UnitId;
use tokio::sync::{mpsc, oneshot};

use crate::outcome::{ErrorClass, Health, OFFLINE_AFTER, PollError};

#[derive(Clone, Debug)]
pub(crate) struct DeviceState {
    pub(crate) name: DeviceName,
    pub(crate) bus: BusName,
    pub(crate) link: String,
    pub(crate) unit: UnitId,
    pub(crate) poll_interval: Duration,
    pub(crate) words: BTreeMap<(Table, RegisterAddr), Sample>,
    pub(crate) last_poll: Option<SystemTime>,
    pub(crate) last_ok: Option<SystemTime>,
    pub(crate) consecutive_failures: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) counters: Counters,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) raw: u16,
    pub(crate) at: SystemTime,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) polls_ok: u64,
    pub(crate) polls_failed: u64,
    pub(crate) requests: u64,
    pub(crate) timeouts: u64,
    pub(crate) crc_framing: u64,
    pub(crate) exceptions: u64,
    pub(crate) io: u64,
    pub(crate) exception_codes: BTreeMap<u8, u64>,
}

impl DeviceState {
    pub(crate) fn health(&self) -> Health {
        match (self.last_poll, self.consecutive_failures) {
            (None, _) => Health::Pending,
            (Some(_), 0) => Health::Online,
            (Some(_), n) if n < OFFLINE_AFTER => Health::Failing,
            _ => Health::Offline,
        }
    }

    /// The stored words as a register image, for decoding.
    pub(crate) fn image(&self) -> Image {
        let mut image = Image::default();
        for (&(table, addr), sample) in &self.words {
            image.set(table, addr, sample.raw);
        }
        image
    }
}

/// A request the API sends to a device's bus.
pub(crate) enum Command {
    ResetAlarms {
        device: usize,
        done: oneshot::Sender<Result<(), PollError>>,
    },
}

/// The shared device table plus a way to reach each device's bus.
#[derive(Clone)]
pub(crate) struct Registry {
    states: Arc<RwLock<Vec<DeviceState>>>,
    commands: Arc<Vec<mpsc::Sender<Command>>>,
}

impl Registry {
    pub(crate) fn new(states: Vec<DeviceState>, commands: Vec<mpsc::Sender<Command>>) -> Registry {
        Registry {
            states: Arc::new(RwLock::new(states)),
            commands: Arc::new(commands),
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<DeviceState> {
        self.states
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn get(&self, device: usize) -> Option<DeviceState> {
        self.states
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(device)
            .cloned()
    }

    pub(crate) fn find(&self, name: &str) -> Option<(usize, DeviceState)> {
        let states = self
            .states
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        states
            .iter()
            .position(|d| d.name == name)
            .map(|i| (i, states[i].clone()))
    }

    /// The device's name, for logs.
    pub(crate) fn find_name(&self, device: usize) -> String {
        let states = self
            .states
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        states
            .get(device)
            .map(|d| d.name.to_string())
            .unwrap_or_default()
    }

    pub(crate) fn update(&self, device: usize, f: impl FnOnce(&mut DeviceState)) {
        let mut states = self
            .states
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(state) = states.get_mut(device) {
            f(state);
        }
    }

    /// Asks the device's bus to clear registered alarms; waits for the verified write.
    pub(crate) async fn reset_alarms(&self, device: usize) -> Result<(), PollError> {
        let sender = self
            .commands
            .get(device)
            .ok_or_else(|| PollError::Io("no such device".into()))?;
        let (done, result) = oneshot::channel();
        sender
            .send(Command::ResetAlarms { device, done })
            .await
            .map_err(|_| PollError::Io("the bus poller has stopped".into()))?;
        result
            .await
            .map_err(|_| PollError::Io("the bus poller has stopped".into()))?
    }
}

impl Counters {
    pub(crate) fn count(&mut self, error: &PollError) {
        match error.class() {
            ErrorClass::Timeout => self.timeouts += 1,
            ErrorClass::CrcFraming => self.crc_framing += 1,
            ErrorClass::Exception => self.exceptions += 1,
            ErrorClass::Io => self.io += 1,
        }
        if let PollError::Exception(code) = error {
            *self.exception_codes.entry(*code).or_default() += 1;
        }
    }
}
