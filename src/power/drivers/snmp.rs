//! `snmp`: SNMP v1/v2c SET (and GET to read back) of an INTEGER outlet object, with presets for
//! APC's PowerNet MIB and a generic OID mapping. The UDP port is configurable (pdudaemon's SNMP
//! driver hard-codes 161). Within one attempt the request is re-sent every second with the same
//! request-id, so one lost datagram does not cost a whole attempt.

use std::net::SocketAddr;
use std::time::Duration;

use crate::power::driver::{
    DriverError, DriverErrorKind, DriverFuture, DriverReply, OutletState, OutletTarget, PowerDriver,
};
use crate::power::settings::{SnmpSettings, SnmpVersion};
use crate::power::snmp::{Message, Oid, PduKind, Value, Version, error_status_name};

const RESEND_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct SnmpDriver {
    settings: SnmpSettings,
}

impl SnmpDriver {
    pub fn new(settings: SnmpSettings) -> Self {
        Self { settings }
    }

    fn version(&self) -> Version {
        match self.settings.version {
            SnmpVersion::V1 => Version::V1,
            SnmpVersion::V2c => Version::V2c,
        }
    }

    async fn peer(&self) -> Result<SocketAddr, DriverError> {
        let hp = (self.settings.host.as_str(), self.settings.port);
        tokio::net::lookup_host(hp)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                DriverError::new(
                    DriverErrorKind::Unreachable,
                    format!("cannot resolve SNMP host {:?}", self.settings.host),
                )
            })
    }

    /// Sends one request and waits for its response (ignoring stray datagrams).
    async fn exchange(
        &self,
        kind: PduKind,
        community: &str,
        oid: Oid,
        value: Value,
        resend: bool,
    ) -> Result<(Value, String), DriverError> {
        let peer = self.peer().await?;
        let bind: SocketAddr = if peer.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(|_| DriverError::new(DriverErrorKind::Unreachable, "bind address"))?;
        let io = |e: std::io::Error| {
            DriverError::new(DriverErrorKind::Unreachable, format!("SNMP to {peer}: {e}"))
        };
        let sock = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
        sock.connect(peer).await.map_err(io)?;
        let request_id = rand::random::<i32>() & 0x7fff_ffff;
        let req = Message::request(
            self.version(),
            community,
            kind,
            request_id,
            oid.clone(),
            value.clone(),
        );
        let bytes = req.encode();
        let verb = if kind == PduKind::Set { "SET" } else { "GET" };
        let shown = if kind == PduKind::Set {
            format!("{verb} {oid} = {value} to {peer}")
        } else {
            format!("{verb} {oid} from {peer}")
        };
        let mut buf = vec![0u8; 65535];
        loop {
            // ECONNREFUSED from an earlier ICMP error surfaces here or in recv: no agent there.
            sock.send(&bytes).await.map_err(io)?;
            let deadline = tokio::time::Instant::now() + RESEND_EVERY;
            loop {
                let n = if resend {
                    match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                        Ok(r) => r.map_err(io)?,
                        Err(_) => break,
                    }
                } else {
                    sock.recv(&mut buf).await.map_err(io)?
                };
                let msg = match Message::decode(&buf[..n]) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(%peer, "ignoring malformed SNMP datagram: {e}");
                        continue;
                    }
                };
                if msg.kind != PduKind::Response || msg.request_id != request_id {
                    tracing::debug!(%peer, request_id = msg.request_id, "ignoring unrelated SNMP datagram");
                    continue;
                }
                if msg.error_status != 0 {
                    return Err(DriverError::new(
                        DriverErrorKind::Refused,
                        format!(
                            "{shown}: agent answered {} ({}) at index {}",
                            error_status_name(msg.error_status),
                            msg.error_status,
                            msg.error_index
                        ),
                    ));
                }
                let Some(vb) = msg.varbinds.into_iter().next() else {
                    return Err(DriverError::new(
                        DriverErrorKind::BadReply,
                        format!("{shown}: response without a value"),
                    ));
                };
                let line = format!("{shown} -> {}", vb.value);
                return Ok((vb.value, line));
            }
        }
    }

    fn outlet_oid(
        &self,
        t: &crate::power::settings::OidTemplate,
        target: &OutletTarget,
    ) -> Result<Oid, DriverError> {
        let n = target.number()?;
        t.for_outlet(n)
            .map_err(|e| DriverError::new(DriverErrorKind::Refused, e.to_string()))
    }

    async fn set_value(
        &self,
        target: &OutletTarget,
        v: i64,
        resend: bool,
    ) -> Result<DriverReply, DriverError> {
        let oid = self.outlet_oid(&self.settings.map.control, target)?;
        let (value, line) = self
            .exchange(
                PduKind::Set,
                &self.settings.community,
                oid,
                Value::Integer(v),
                resend,
            )
            .await?;
        if matches!(value, Value::NoSuchObject | Value::NoSuchInstance) {
            return Err(DriverError::new(
                DriverErrorKind::Refused,
                format!("{line}: no such outlet"),
            ));
        }
        Ok(DriverReply::line(line))
    }
}

impl PowerDriver for SnmpDriver {
    fn kind(&self) -> &'static str {
        "snmp"
    }

    fn set<'a>(&'a self, target: &'a OutletTarget, on: bool) -> DriverFuture<'a, DriverReply> {
        let m = &self.settings.map;
        Box::pin(self.set_value(target, if on { m.on_value } else { m.off_value }, true))
    }

    fn can_read(&self) -> bool {
        self.settings.map.state.is_some()
    }

    fn get<'a>(&'a self, target: &'a OutletTarget) -> DriverFuture<'a, (OutletState, DriverReply)> {
        Box::pin(async move {
            let Some((oid_t, on_v, off_v)) = &self.settings.map.state else {
                return Err(DriverError::unsupported("read state (no state_oid)"));
            };
            let oid = self.outlet_oid(oid_t, target)?;
            let (value, line) = self
                .exchange(
                    PduKind::Get,
                    &self.settings.read_community,
                    oid,
                    Value::Null,
                    true,
                )
                .await?;
            let state = match value {
                Value::Integer(v) if v == *on_v => OutletState::On,
                Value::Integer(v) if v == *off_v => OutletState::Off,
                Value::NoSuchObject | Value::NoSuchInstance => {
                    return Err(DriverError::new(
                        DriverErrorKind::Refused,
                        format!("{line}: no such outlet"),
                    ));
                }
                other => {
                    return Err(DriverError::new(
                        DriverErrorKind::BadReply,
                        format!(
                            "{line}: expected {on_v} (on) or {off_v} (off), got {other} (APC: 4 = outlet state unknown)"
                        ),
                    ));
                }
            };
            Ok((state, DriverReply::line(line)))
        })
    }

    fn can_reboot(&self) -> bool {
        self.settings.map.reboot_value.is_some()
    }

    fn reboot<'a>(
        &'a self,
        target: &'a OutletTarget,
        _delay: Duration,
    ) -> DriverFuture<'a, DriverReply> {
        Box::pin(async move {
            let Some(v) = self.settings.map.reboot_value else {
                return Err(DriverError::unsupported(
                    "reboot natively (no reboot_value)",
                ));
            };
            // Not re-sent: a duplicate reboot SET would cycle the board twice.
            self.set_value(target, v, false).await
        })
    }
}
