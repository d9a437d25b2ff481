//! `sim` in-process: labd drives a [`SimPdu`] it shares with simulated boards (`labd demo`,
//! tests). Over the network the simulator is reached with `drivers::http::SimHttpDriver`.

use labd_hw_fixtures::simpdu::{SimError, SimPdu};

use crate::power::driver::{
    DriverError, DriverErrorKind, DriverFuture, DriverReply, OutletState, OutletTarget, PowerDriver,
};

#[derive(Debug, Clone)]
pub struct SimDriver {
    pdu: SimPdu,
}

impl SimDriver {
    pub fn new(pdu: SimPdu) -> Self {
        Self { pdu }
    }
}

fn sim_error(e: SimError) -> DriverError {
    let kind = match e {
        SimError::Injected { .. } => DriverErrorKind::Refused,
        SimError::NoSuchOutlet { .. } => DriverErrorKind::Refused,
    };
    DriverError::new(kind, format!("simulated PDU: {e}"))
}

impl PowerDriver for SimDriver {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn set<'a>(&'a self, target: &'a OutletTarget, on: bool) -> DriverFuture<'a, DriverReply> {
        Box::pin(async move {
            let n = target.number()?;
            let ack = self.pdu.set(n, on).await.map_err(sim_error)?;
            Ok(DriverReply::line(format!(
                "sim {} outlet {n} {} -> acknowledged {}",
                self.pdu.name(),
                if on { "on" } else { "off" },
                OutletState::from_on(ack)
            )))
        })
    }

    fn can_read(&self) -> bool {
        true
    }

    fn get<'a>(&'a self, target: &'a OutletTarget) -> DriverFuture<'a, (OutletState, DriverReply)> {
        Box::pin(async move {
            let n = target.number()?;
            let on = self.pdu.get(n).await.map_err(sim_error)?;
            let state = OutletState::from_on(on);
            Ok((
                state,
                DriverReply::line(format!("sim {} outlet {n} reads {state}", self.pdu.name())),
            ))
        })
    }
}
