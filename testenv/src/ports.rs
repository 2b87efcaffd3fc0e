//! Loopback ports for the components. Picked below the kernel's ephemeral range (usually
//! 32768-60999): a port picked there and released is soon taken by some process's
//! outgoing connection (the apiserver's to etcd, say) before the component binds it.
//! Ports handed out are remembered, so two clusters of one process never share one.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

use crate::Error;

/// The range ports are picked from.
const LOW: u16 = 20_000;
const HIGH: u16 = 32_000;

static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free loopback port that no outgoing connection will take meanwhile.
pub fn free_port() -> Result<u16, Error> {
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Start somewhere that depends on the process, so that test binaries run one after
    // another (or a developer's `testenv up` beside them) do not walk the same ports.
    let span = u32::from(HIGH - LOW);
    let start = (std::process::id().wrapping_mul(7919)
        + u32::try_from(given.len()).unwrap_or(0) * 13)
        % span;
    for offset in 0..span {
        let port = LOW + u16::try_from((start + offset) % span).unwrap_or(0);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    Err(Error::Io {
        what: format!("find a free loopback port in {LOW}-{HIGH}"),
        source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "every port is taken"),
    })
}
