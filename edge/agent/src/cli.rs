//! Command-line interface: `run`, `demo`, `sim`, `token`, the cluster's `init`, `join`,
//! `invite`, `status` and `peers`, and the overlay's `wg` and `ping`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use constella_api::cluster::{InviteLink, InviteRequest, Nodes};
use constella_api::overlay::{AddDevice, DeviceAdded, OverlayStatus, PingReply, PingRequest};
use constella_api::{NodeName, routes};

use crate::config::{self, Config};
use constella_modbus::{LineParity, LineSettings};
use constella_sim::{self as sim, FaultSpec, Pacing, SimOptions, Undocumented};

use crate::serial;
use crate::{agent, client, cluster, demo, shutdown, state, wg};

#[derive(Parser)]
#[command(
    name = "constella",
    version,
    about = "Constella edge agent for KUB-1063 climate controllers"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// Log filter when RUST_LOG is not set: the demo keeps the terminal for its summary.
    pub(crate) fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Demo(_) => "warn",
            _ => "info",
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the agent with a configuration file (the real-world mode).
    Run {
        /// Configuration file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Start the built-in simulator (two units on a pty RTU bus, one on Modbus TCP), the agent
    /// polling it, and the API; print a live summary until Ctrl-C.
    Demo(DemoArgs),
    /// Serve simulated KUB-1063 units over Modbus TCP, RTU on a serial device or pty, or RTU over TCP.
    Sim(Box<SimArgs>),
    /// Create a new network with this node as its first member.
    Init(InitArgs),
    /// Join a network with an invite link from `constella invite`.
    Join(JoinArgs),
    /// Print a single-use invite link for a new node (asks the running agent).
    Invite {
        /// How long the link stays valid (at most 7 days).
        #[arg(long, default_value = "15m")]
        ttl: String,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Print the cluster table: nodes, status, leader and bot lease.
    Status {
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// List the network's nodes, or remove one network-wide (`peers remove NAME`).
    Peers {
        #[command(subcommand)]
        action: Option<PeersAction>,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// The WireGuard overlay: `wg show`, `wg add-device NAME`, `wg remove-device NAME`.
    Wg {
        #[command(subcommand)]
        action: WgAction,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Send ICMP echo through the overlay to an overlay address and print round trips, as
    /// `ping` does (the running agent sends them: no privilege needed).
    Ping {
        address: std::net::Ipv4Addr,
        /// Stop after this many echoes.
        #[arg(short = 'c', long, default_value_t = 4)]
        count: u32,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Print the API bearer token, creating it if needed.
    Token {
        /// Take the state directory from this configuration file.
        #[arg(long, conflicts_with = "state_dir")]
        config: Option<PathBuf>,
        /// State directory [default: /var/lib/constella].
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
pub(crate) struct NodeArgs {
    /// This node's name, unique in the network.
    #[arg(long, env = "SERVER_NAME")]
    name: NodeName,
    /// HOST:PORT where the other nodes reach this one (a hub: its public host; its clients
    /// send WireGuard to HOST:VPN_LISTEN_PORT). A joiner on the overlay needs none.
    #[arg(long, env = "PUBLIC_ADDR")]
    public_addr: Option<String>,
    /// IP:PORT the cluster listener binds [default: 0.0.0.0 and the public port].
    #[arg(long, env = "LISTEN_ADDR")]
    listen: Option<String>,
    /// Telegram bot token; only nodes with one can host the bot.
    #[arg(long, env = "BOT_TOKEN", hide_env_values = true)]
    bot_token: Option<String>,
    /// Election priority: the smallest wins among live nodes with a bot token.
    #[arg(long, env = "PRIORITY", default_value_t = 100)]
    priority: u32,
    /// State directory.
    #[arg(long, env = "STATE_DIR", default_value = config::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(flatten)]
    vpn: VpnArgs,
}

/// The WireGuard overlay's settings, named as in the reference deployment.
#[derive(Args)]
pub(crate) struct VpnArgs {
    /// none, hub (the network's public relay, made by `init`) or client [default: none for
    /// `init`; client for `join` when the invite names a hub].
    #[arg(long, env = "VPN_MODE", value_enum)]
    vpn_mode: Option<cluster::VpnMode>,
    /// The name `constella wg show` gives the interface.
    #[arg(long, env = "VPN_INTERFACE_NAME", default_value = "wg0")]
    vpn_interface_name: String,
    /// The overlay's network (hub).
    #[arg(long, env = "VPN_CIDR", default_value = "10.42.0.0/24")]
    vpn_cidr: ipnet::Ipv4Net,
    /// The hub's public UDP port.
    #[arg(long, env = "VPN_LISTEN_PORT", default_value_t = 51820)]
    vpn_listen_port: u16,
    /// The hub's HOST:PORT as this node reaches it [default: from the invite].
    #[arg(long, env = "VPN_HUB_ENDPOINT")]
    vpn_hub_endpoint: Option<String>,
    /// The hub's WireGuard public key, base64 [default: from the invite].
    #[arg(long, env = "VPN_HUB_PUBLIC_KEY")]
    vpn_hub_public_key: Option<String>,
    /// This node's overlay address [default: the hub takes the CIDR's first; a joiner the
    /// one its invite holds].
    #[arg(long, env = "VPN_ADDRESS")]
    vpn_address: Option<std::net::Ipv4Addr>,
    /// What a client sends through the hub [default: the whole overlay network].
    #[arg(long, env = "VPN_ALLOWED_IPS", value_delimiter = ',')]
    vpn_allowed_ips: Option<Vec<ipnet::Ipv4Net>>,
    /// Also show the overlay to the operating system as a TUN interface named
    /// VPN_INTERFACE_NAME, holding this node's overlay address (the agent then needs
    /// CAP_NET_ADMIN).
    #[arg(long, env = "VPN_TUN")]
    tun: bool,
}

#[derive(Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The owner's Telegram username: the only user the bot answers.
    #[arg(long, env = "OWNER_USERNAME")]
    owner: String,
}

#[derive(Args)]
pub(crate) struct JoinArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The invite link (join://HOST:PORT?net=…&token=…&ttl=…).
    #[arg(long = "join", env = "JOIN_LINK")]
    link: String,
    /// How many times to try an unreachable seed (with backoff).
    #[arg(long, default_value_t = 6)]
    attempts: u32,
}

#[derive(Args)]
pub(crate) struct AgentArgs {
    /// The running agent's configuration file (for its API address and token).
    #[arg(long, global = true, env = "CONSTELLA_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
}

#[derive(Subcommand)]
pub(crate) enum PeersAction {
    /// Forget a node network-wide; its key is no longer accepted.
    Remove { name: String },
}

#[derive(Subcommand)]
pub(crate) enum WgAction {
    /// The interface and its peers as `wg show` prints them, and how each member is reached
    /// (direct or relayed by the hub).
    Show,
    /// Admit a standard WireGuard device (a phone, a laptop) and print its wg-quick
    /// configuration; its private key is made here and printed once, never sent.
    AddDevice {
        name: String,
        /// Also print the configuration as a QR code for the WireGuard phone app.
        #[arg(long)]
        qr: bool,
    },
    /// Withdraw a device network-wide; its key no longer completes a handshake.
    RemoveDevice { name: String },
}

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Address of the API.
    #[arg(long, default_value = config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// State directory [default: a fresh directory under the system temp dir].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Seconds between polls of each unit.
    #[arg(long, default_value_t = 2)]
    poll_seconds: u64,
}

#[derive(Args)]
pub(crate) struct SimArgs {
    /// Serve Modbus TCP on this address (port 0 picks a free port; the chosen one is printed).
    #[arg(long)]
    tcp: Option<SocketAddr>,
    /// Unit ids on the TCP server.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = unit_id)]
    tcp_units: Vec<u8>,
    /// Serve Modbus RTU on this serial device.
    #[arg(long, conflicts_with = "rtu_pty")]
    rtu: Option<PathBuf>,
    /// Create a pty pair and serve RTU on it; the slave path is printed (and linked at LINK if given).
    #[arg(long, value_name = "LINK", num_args = 0..=1, default_missing_value = "")]
    rtu_pty: Option<PathBuf>,
    /// Unit ids on the RTU bus.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = unit_id)]
    rtu_units: Vec<u8>,
    /// Serve RTU framing over TCP (as a serial device server does) on this address.
    #[arg(long)]
    rtu_tcp: Option<SocketAddr>,
    /// Unit ids behind the RTU-over-TCP server.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = unit_id)]
    rtu_tcp_units: Vec<u8>,
    /// Serial line speed.
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// Serial data bits.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(5..=8))]
    data_bits: u8,
    /// Serial parity.
    #[arg(long, value_enum, default_value_t = ParityArg::None)]
    parity: ParityArg,
    /// Serial stop bits.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    stop_bits: u8,
    /// Answer at once instead of taking the time the frames would take on a real wire.
    #[arg(long)]
    no_pace: bool,
    /// Inject a fault: [tcp:|rtu:|rtu-tcp:]UNIT=FAULT[,FAULT…] (silent, crc, exception:N, slow:MS,
    /// alarm:BIT, FIELD:pending|break|error|disabled, clear). Repeatable.
    #[arg(long = "fault", value_name = "SPEC", value_parser = fault_spec)]
    faults: Vec<FaultSpec>,
    /// A TOML file of timed faults ([[step]] at = "10s", fault = "rtu:2=silent").
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Start every unit from a captured snapshot (A–H, see common/kub1063/src/fixtures.rs).
    #[arg(long)]
    snapshot: Option<char>,
    /// Seed of the simulated drift.
    #[arg(long, default_value_t = 1063)]
    seed: u64,
    /// How reads of undocumented addresses are answered.
    #[arg(long, value_enum, default_value_t = UndocumentedArg::Exception)]
    gaps: UndocumentedArg,
    /// How FC03 reads of input addresses are answered.
    #[arg(long, value_enum, default_value_t = UndocumentedArg::Exception)]
    fc03_input: UndocumentedArg,
    /// Simulated seconds per real second; 0 freezes the plant (words stay as they are).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Length of a simulated day (the day counter's step), e.g. 24h or 10m.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    day_length: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum ParityArg {
    None,
    Even,
    Odd,
}

#[derive(Clone, Copy, ValueEnum)]
enum UndocumentedArg {
    Exception,
    Answer,
    Silent,
}

fn unit_id(text: &str) -> Result<u8, String> {
    match text.trim().parse::<u8>() {
        Ok(id @ 1..=247) => Ok(id),
        _ => Err(format!("`{text}` is not a Modbus unit id (1–247)")),
    }
}

fn fault_spec(text: &str) -> Result<FaultSpec, String> {
    FaultSpec::parse(text).map_err(|e| format!("{e:#}"))
}

async fn wg_command(action: WgAction, agent: &AgentArgs) -> anyhow::Result<()> {
    let client = client::local(&agent.config)?;
    match action {
        WgAction::Show => {
            let status: OverlayStatus = client.get(routes::OVERLAY).await?;
            print!("{}", wg::show(&status));
        }
        WgAction::AddDevice { name, qr } => {
            let key = constella_overlay::PrivateKey::generate();
            let request = AddDevice {
                name,
                public_key: key.public_key().to_string(),
            };
            let added: DeviceAdded = client.post(routes::OVERLAY_DEVICES, &request).await?;
            let config = wg::quick_config(&added, &key);
            print!("{config}");
            if qr {
                println!("{}", wg::qr(&config)?);
            }
        }
        WgAction::RemoveDevice { name } => {
            client.delete(&routes::overlay_device(&name)).await?;
            println!("removed device {name}");
        }
    }
    Ok(())
}

async fn ping(address: std::net::Ipv4Addr, count: u32, agent: &AgentArgs) -> anyhow::Result<()> {
    let client = client::local(&agent.config)?;
    println!("PING {address} 56(84) bytes of data, through the overlay.");
    let mut rtts = Vec::new();
    for sequence in 1..=count {
        if sequence > 1 {
            tokio::time::sleep(wg::PING_INTERVAL).await;
        }
        let request = PingRequest {
            address,
            sequence: sequence as u16,
        };
        match client
            .post::<_, PingReply>(routes::OVERLAY_PING, &request)
            .await
        {
            Ok(reply) => {
                println!("{}", wg::echo_line(address, request.sequence, reply.rtt_ms));
                rtts.push(reply.rtt_ms);
            }
            Err(error) => println!("no reply for icmp_seq={sequence}: {error}"),
        }
    }
    print!("\n{}", wg::ping_summary(address, count, &rtts));
    anyhow::ensure!(!rtts.is_empty(), "no echo reply from {address}");
    Ok(())
}

impl Command {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Run { config } => {
                let config = Config::load(&config)?;
                let agent = agent::Agent::start(&config).await?;
                tracing::info!(api = %agent.api_addr, cluster = ?agent.cluster_listen, devices = config.devices.len(), "agent running");
                shutdown::signal().await?;
                agent.stop().await;
                Ok(())
            }
            Command::Demo(args) => {
                demo::run(
                    args.listen,
                    args.state_dir,
                    Duration::from_secs(args.poll_seconds.max(1)),
                )
                .await
            }
            Command::Sim(args) => run_sim(*args).await,
            Command::Init(args) => {
                let state_dir = args.node.state_dir.clone();
                let (network, node) = cluster::init(cluster::InitOptions {
                    node: args.node.into_options(),
                    owner: args.owner,
                })?;
                println!("created network {network}");
                println!("node {node} in {}", state_dir.display());
                Ok(())
            }
            Command::Join(args) => {
                let (network, node) = cluster::join(cluster::JoinOptions {
                    node: args.node.into_options(),
                    link: args.link,
                    attempts: args.attempts.max(1),
                })
                .await?;
                println!("joined network {network} as node {node}");
                Ok(())
            }
            Command::Invite { ttl, agent } => {
                cluster::parse_ttl(&ttl)?;
                let request = InviteRequest { ttl: Some(ttl) };
                let answer: InviteLink = client::local(&agent.config)?
                    .post(routes::INVITES, &request)
                    .await?;
                println!("{}", answer.link);
                Ok(())
            }
            Command::Status { agent } => {
                let table: Nodes = client::local(&agent.config)?.get(routes::NODES).await?;
                print!("{}", client::status_table(&table));
                Ok(())
            }
            Command::Peers { action, agent } => match action {
                Some(PeersAction::Remove { name }) => {
                    client::local(&agent.config)?
                        .delete(&routes::node(&name))
                        .await?;
                    println!("removed {name}");
                    Ok(())
                }
                None => {
                    let table: Nodes = client::local(&agent.config)?.get(routes::NODES).await?;
                    print!("{}", client::peers_table(&table));
                    Ok(())
                }
            },
            Command::Wg { action, agent } => wg_command(action, &agent).await,
            Command::Ping {
                address,
                count,
                agent,
            } => ping(address, count, &agent).await,
            Command::Token { config, state_dir } => {
                let dir = match (config, state_dir) {
                    (Some(path), _) => Config::load(&path)?.state_dir,
                    (None, Some(dir)) => dir,
                    (None, None) => PathBuf::from(config::DEFAULT_STATE_DIR),
                };
                println!("{}", state::api_token(&dir)?);
                Ok(())
            }
        }
    }
}

async fn run_sim(args: SimArgs) -> anyhow::Result<()> {
    if args.tcp.is_none() && args.rtu.is_none() && args.rtu_pty.is_none() && args.rtu_tcp.is_none()
    {
        bail!("nothing to serve: give --tcp, --rtu, --rtu-pty or --rtu-tcp");
    }
    if !(args.speed >= 0.0 && args.speed.is_finite()) {
        bail!("--speed must be 0 or a positive number");
    }
    let scenario = match &args.scenario {
        Some(path) => sim::load_scenario(path)?,
        None => Vec::new(),
    };
    let undocumented = |arg: UndocumentedArg| match arg {
        UndocumentedArg::Exception => Undocumented::Exception,
        UndocumentedArg::Answer => Undocumented::Answer,
        UndocumentedArg::Silent => Undocumented::Silent,
    };
    let line = LineSettings {
        baud: args.baud,
        data_bits: args.data_bits,
        parity: match args.parity {
            ParityArg::None => LineParity::None,
            ParityArg::Even => LineParity::Even,
            ParityArg::Odd => LineParity::Odd,
        },
        stop_bits: args.stop_bits,
    };
    let rtu = match args.rtu {
        Some(path) => {
            let port: sim::SerialStream = Box::new(serial::open(&path, &line)?);
            Some((path, port))
        }
        None => None,
    };
    let options = SimOptions {
        tcp: args.tcp,
        tcp_units: args.tcp_units,
        rtu,
        rtu_pty: args
            .rtu_pty
            .map(|link| Some(link).filter(|l| !l.as_os_str().is_empty())),
        rtu_units: args.rtu_units,
        rtu_tcp: args.rtu_tcp,
        rtu_tcp_units: args.rtu_tcp_units,
        line,
        pacing: if args.no_pace {
            Pacing::Instant
        } else {
            Pacing::WireTime
        },
        faults: args.faults,
        scenario,
        snapshot: args.snapshot,
        seed: args.seed,
        undocumented: undocumented(args.gaps),
        fc03_on_input: undocumented(args.fc03_input),
        speed: args.speed,
        day_length: args.day_length,
    };
    let running = sim::start(options)
        .await
        .context("Failed to start the simulator")?;
    // Machine-readable endpoint lines on stdout: scripts and tests read them.
    if let Some(addr) = running.tcp {
        println!("tcp {addr}");
    }
    if let Some(addr) = running.rtu_tcp {
        println!("rtu-tcp {addr}");
    }
    if let Some(path) = &running.rtu_path {
        println!("rtu {}", path.display());
    }
    println!("ready");
    shutdown::signal().await?;
    drop(running);
    Ok(())
}

impl NodeArgs {
    fn into_options(self) -> cluster::NodeOptions {
        cluster::NodeOptions {
            name: self.name,
            public_addr: self.public_addr,
            listen: self.listen,
            bot_token: self.bot_token,
            priority: self.priority,
            state_dir: self.state_dir,
            overlay: cluster::OverlayOptions {
                mode: self.vpn.vpn_mode,
                interface: self.vpn.vpn_interface_name,
                cidr: self.vpn.vpn_cidr,
                listen_port: self.vpn.vpn_listen_port,
                hub_endpoint: self.vpn.vpn_hub_endpoint,
                hub_public_key: self.vpn.vpn_hub_public_key,
                address: self.vpn.vpn_address,
                allowed_ips: self.vpn.vpn_allowed_ips,
                tun: self.vpn.tun,
            },
        }
    }
}
