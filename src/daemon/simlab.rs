//! A simulated lab with no hardware and no root: simulated boards on pseudo-terminals, one
//! simulated PDU whose outlets really power them, an inventory describing both, and the daemon
//! for it. `labd demo` runs one; tests and later demos (jobs, Multi-Node) build on it:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use labd::daemon::simlab::SimLab;
//! let lab = SimLab::build(2, "/tmp/lab".into(), true)?;
//! lab.write_inventory()?;
//! let running = lab.daemon()?/* .with_service(...) */.start().await?;
//! lab.power_on_all(running.services(), std::time::Duration::ZERO).await;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use labd_hw_fixtures::simboard::{BoardControl, BoardScript, KernelMode, SimBoard};
use labd_hw_fixtures::simpdu::SimPdu;

use super::{Daemon, DaemonError, Services};
use crate::ids::{DeviceName, PduName};
use crate::power::{PowerError, PowerOp, PowerOutcome};

#[derive(Debug, thiserror::Error)]
pub enum SimLabError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// One simulated board of the lab.
pub struct SimLabBoard {
    pub name: String,
    pub board: SimBoard,
    /// Its console's telnet listener (`telnet 127.0.0.1 PORT`).
    pub telnet_port: u16,
    /// Its outlet on the lab's PDU.
    pub outlet: u32,
    /// What the board does, for the user.
    pub note: &'static str,
    pub device_type: &'static str,
    pub tags: &'static [&'static str],
    /// A board of the demo's Multi-Node group (not switched on with the others).
    pub group: bool,
}

/// The Multi-Node group boards (`examples/jobs/demo-group.yaml`): name, type, tags, note.
const GROUP_BOARDS: [(&str, &str, &[&str], &str); 4] = [
    (
        "grp-srv1",
        "labd-sim",
        &["usb-otg"],
        "Multi-Node group: server",
    ),
    (
        "grp-srv2",
        "labd-sim",
        &["usb-otg"],
        "Multi-Node group: server",
    ),
    (
        "grp-master",
        "labd-sim-master",
        &[],
        "Multi-Node group: client, master of grp-slave",
    ),
    (
        "grp-slave",
        "labd-sim-slave",
        &[],
        "Multi-Node group: slave, booted by grp-master",
    ),
];

/// The simulated lab.
pub struct SimLab {
    pub state_dir: PathBuf,
    pub boards: Vec<SimLabBoard>,
    /// The PDU every board is plugged into (outlet n powers board n).
    pub pdu: SimPdu,
    pub pdu_name: PduName,
    /// The pdudaemon-compatible listener's port on 127.0.0.1.
    pub pdudaemon_port: u16,
    /// The PDU's own HTTP API (see [`Self::serve_pdu`]): the daemon and the group's master
    /// board reach it there.
    pub pdu_server: Option<labd_hw_fixtures::simpdu::http::SimPduServer>,
    remove_on_drop: bool,
}

const NAMES: [&str; 4] = ["bbb", "rpi", "imx", "sifive"];

/// Name of the lab's PDU.
pub const PDU_NAME: &str = "demo-pdu";

/// Makes `pdu`'s `outlet` power `board`: the board boots when the outlet turns on and goes dark
/// when it turns off. Switching happens on a thread of its own (the PDU's hook must not block,
/// and powering off waits for the board's firmware thread), in the order the outlet switched.
pub fn wire_outlet(pdu: &SimPdu, outlet: u32, board: BoardControl) {
    let (tx, rx) = std::sync::mpsc::channel::<bool>();
    let name = format!("outlet-{}-{outlet}", pdu.name());
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        // Ends when the PDU (and with it the hook holding `tx`) is dropped.
        while let Ok(on) = rx.recv() {
            if on {
                board.power_on();
            } else {
                board.power_off();
            }
        }
    });
    if spawned.is_ok() {
        pdu.on_switch(
            outlet,
            Box::new(move |on| {
                let _ = tx.send(on);
            }),
        );
    }
}

impl SimLab {
    /// Creates `n` boards under `state_dir/dev`, all plugged into one simulated PDU and powered
    /// off (nothing runs yet).
    pub fn build(n: u8, state_dir: PathBuf, remove_on_drop: bool) -> Result<Self, SimLabError> {
        let dev_dir = state_dir.join("dev");
        std::fs::create_dir_all(&dev_dir).map_err(|source| SimLabError::Io {
            what: "cannot create",
            path: dev_dir.clone(),
            source,
        })?;
        let pdu = SimPdu::new(PDU_NAME, (u32::from(n) + GROUP_BOARDS.len() as u32).max(8));
        let mut boards = Vec::new();
        for i in 0..n {
            let name = format!("demo-{}{:02}", NAMES[i as usize % NAMES.len()], i + 1);
            let mut script = BoardScript::uboot_linux(&name);
            let note = match i % 3 {
                0 => "U-Boot, Linux, login root/root, a real shell",
                1 => {
                    script.login = None;
                    "U-Boot, Linux, shell without login"
                }
                _ => {
                    script.kernel = KernelMode::Panic(
                        "VFS: Unable to mount root fs on unknown-block(0,0)".into(),
                    );
                    "kernel panic (a broken rootfs); interrupt U-Boot and type `reset`"
                }
            };
            let board =
                SimBoard::spawn(&name, &dev_dir, script).map_err(|source| SimLabError::Io {
                    what: "cannot create the simulated board",
                    path: dev_dir.join(&name),
                    source,
                })?;
            let outlet = u32::from(i) + 1;
            wire_outlet(&pdu, outlet, board.control());
            boards.push(SimLabBoard {
                name,
                board,
                telnet_port: labd_hw_fixtures::free_tcp_port(),
                outlet,
                note,
                device_type: "labd-sim",
                tags: &[],
                group: false,
            });
        }
        for (i, (name, device_type, tags, note)) in GROUP_BOARDS.into_iter().enumerate() {
            let mut script = BoardScript::uboot_linux(name);
            script.login = None;
            let board =
                SimBoard::spawn(name, &dev_dir, script).map_err(|source| SimLabError::Io {
                    what: "cannot create the simulated board",
                    path: dev_dir.join(name),
                    source,
                })?;
            let outlet = u32::from(n) + i as u32 + 1;
            wire_outlet(&pdu, outlet, board.control());
            boards.push(SimLabBoard {
                name: name.to_string(),
                board,
                telnet_port: labd_hw_fixtures::free_tcp_port(),
                outlet,
                note,
                device_type,
                tags,
                group: true,
            });
        }
        Ok(Self {
            state_dir,
            boards,
            pdu,
            pdu_name: PduName::new(PDU_NAME).map_err(|e| SimLabError::Io {
                what: "bad PDU name",
                path: PathBuf::from(PDU_NAME),
                source: std::io::Error::other(e.to_string()),
            })?,
            pdudaemon_port: labd_hw_fixtures::free_tcp_port(),
            pdu_server: None,
            remove_on_drop,
        })
    }

    /// Serves the PDU's HTTP API on a free loopback port; the inventory then names it as the
    /// PDU's `url` (call before writing the inventory).
    pub async fn serve_pdu(&mut self) -> Result<String, SimLabError> {
        let server = labd_hw_fixtures::simpdu::http::SimPduServer::start(self.pdu.clone())
            .await
            .map_err(|source| SimLabError::Io {
                what: "cannot serve the simulated PDU",
                path: PathBuf::from("127.0.0.1:0"),
                source,
            })?;
        let url = server.url();
        self.pdu_server = Some(server);
        Ok(url)
    }

    pub fn inventory_path(&self) -> PathBuf {
        self.state_dir.join("inventory.toml")
    }

    /// The inventory describing the lab; later demos append their sections.
    pub fn inventory_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# Generated by `labd demo`.\n[worker]\nname = \"demo\"\nstate_dir = \"{}\"\n",
            self.state_dir.display()
        );
        let _ = writeln!(
            t,
            "[power]\npdudaemon_listen = \"127.0.0.1:{}\"\nreboot_delay = \"2s\"\n\n\
             [[pdu]]\nname = \"{}\"\ndriver = \"sim\"   # in-process: its outlets power the simulated boards\n\
             outlets = {}\nretries = 2\nretry_delay = \"200ms\"\ntimeout = \"5s\"\n{}",
            self.pdudaemon_port,
            self.pdu_name,
            self.pdu.outlet_count(),
            self.pdu_server
                .as_ref()
                .map_or(String::new(), |s| format!("url = \"{}\"\n", s.url()))
        );
        for b in &self.boards {
            let _ = writeln!(
                t,
                "[[device]]\nname = \"{}\"\ndevice_type = \"{}\"\ntags = [{}]\n[device.console]\ntty = \"{}\"\nbaud = 115200\nlisten = {}\n\
                 [device.power]\npdu = \"{}\"\noutlet = {}\n\
                 [device.boot]\nmethods = [\"minimal\", \"u-boot\"]\nbootloader_prompt = \"=> \"\n\
                 results_dir = \"{}/lava-%s\"\n",
                b.name,
                b.device_type,
                b.tags
                    .iter()
                    .map(|t| format!("\"{t}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                b.board.tty_path().display(),
                b.telnet_port,
                self.pdu_name,
                b.outlet,
                self.state_dir.display()
            );
        }
        t
    }

    /// Writes [`Self::inventory_text`] to [`Self::inventory_path`].
    pub fn write_inventory(&self) -> Result<PathBuf, SimLabError> {
        let path = self.inventory_path();
        std::fs::write(&path, self.inventory_text()).map_err(|source| SimLabError::Io {
            what: "cannot write",
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// The daemon for the lab's inventory (written first), with the PDU simulator attached; add
    /// services before starting it.
    pub fn daemon(&self) -> Result<Daemon, SimLabError> {
        let path = self.inventory_path();
        Ok(Daemon::load(&path)?.with_sim_pdu(self.pdu_name.clone(), self.pdu.clone()))
    }

    /// Writes the inventory and starts the daemon in-process.
    pub async fn start(&self) -> Result<super::RunningDaemon, SimLabError> {
        self.write_inventory()?;
        Ok(self.daemon()?.start().await?)
    }

    /// Switches every board's outlet on through the daemon's power queue, `stagger` apart
    /// (not the Multi-Node group's boards: their jobs power them).
    pub async fn power_on_all(
        &self,
        services: &Services,
        stagger: Duration,
    ) -> Vec<Result<PowerOutcome, PowerError>> {
        let mut out = Vec::new();
        for (i, b) in self.boards.iter().filter(|b| !b.group).enumerate() {
            if i > 0 && !stagger.is_zero() {
                tokio::time::sleep(stagger).await;
            }
            let r = match DeviceName::new(b.name.as_str()) {
                Ok(d) => services.power().power(&d, PowerOp::On).await,
                Err(_) => continue,
            };
            out.push(r);
        }
        out
    }
}

impl Drop for SimLab {
    fn drop(&mut self) {
        for b in &self.boards {
            b.board.power_off();
        }
        if self.remove_on_drop {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}
