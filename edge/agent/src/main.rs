//! `constella`, the Constella edge agent: polls KUB-1063 climate controllers over Modbus RTU and
//! TCP and serves their decoded data over an authenticated HTTP API. It also carries the KUB-1063
//! simulator (`constella sim`) and a self-contained demo (`constella demo`).

fn main() -> std::process::ExitCode {
    constella::main()
}
