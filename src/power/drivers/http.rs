//! HTTP PDUs: pdudaemon's API, Netio's JSON API and the simulator's own tiny API. All share one
//! `reqwest` client per PDU; the generic layer bounds every call with the PDU's `timeout`.

use std::time::Duration;

use serde::Deserialize;

use crate::power::driver::{
    DriverError, DriverErrorKind, DriverFuture, DriverReply, OutletState, OutletTarget, PowerDriver,
};

fn client() -> Result<reqwest::Client, DriverError> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| DriverError::new(DriverErrorKind::Unreachable, format!("HTTP client: {e}")))
}

fn unreachable(url: &str, e: reqwest::Error) -> DriverError {
    let mut msg = format!("GET/POST {url}: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    DriverError::new(DriverErrorKind::Unreachable, msg)
}

/// Reads a reply body, refusing non-2xx statuses with the body in the message.
async fn body(
    url: &str,
    resp: reqwest::Response,
) -> Result<(reqwest::StatusCode, String), DriverError> {
    let status = resp.status();
    let text = resp.text().await.map_err(|e| unreachable(url, e))?;
    if !status.is_success() {
        return Err(DriverError::new(
            DriverErrorKind::Refused,
            format!("{url} answered {status}: {:?}", text.trim_end()),
        ));
    }
    Ok((status, text))
}

/// `pdudaemon`: `GET /power/control/{on,off,reboot}?hostname=&port=[&delay=]`. pdudaemon answers
/// only when its own retries are done, so this PDU's `timeout` must exceed pdudaemon's
/// `retries` x `retrydelay`. pdudaemon 1.1.1 cannot report state.
#[derive(Debug)]
pub struct PdudaemonDriver {
    url: String,
    hostname: String,
    http: reqwest::Client,
}

impl PdudaemonDriver {
    pub fn new(url: &str, hostname: &str) -> Result<Self, DriverError> {
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            hostname: hostname.to_string(),
            http: client()?,
        })
    }

    async fn call(
        &self,
        request: &str,
        target: &OutletTarget,
        delay: Option<u64>,
    ) -> Result<DriverReply, DriverError> {
        let mut url = reqwest::Url::parse(&format!("{}/power/control/{request}", self.url))
            .map_err(|e| {
                DriverError::new(DriverErrorKind::Refused, format!("bad pdudaemon url: {e}"))
            })?;
        url.query_pairs_mut()
            .append_pair("hostname", &self.hostname)
            .append_pair("port", &target.outlet);
        if let Some(d) = delay {
            url.query_pairs_mut().append_pair("delay", &d.to_string());
        }
        let shown = url.to_string();
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unreachable(&shown, e))?;
        let (status, text) = body(&shown, resp).await?;
        Ok(DriverReply::line(format!(
            "GET {shown} -> {} {}",
            status.as_u16(),
            text.trim_end()
        )))
    }
}

impl PowerDriver for PdudaemonDriver {
    fn kind(&self) -> &'static str {
        "pdudaemon"
    }

    fn set<'a>(&'a self, target: &'a OutletTarget, on: bool) -> DriverFuture<'a, DriverReply> {
        Box::pin(self.call(if on { "on" } else { "off" }, target, None))
    }

    fn can_reboot(&self) -> bool {
        true
    }

    fn reboot<'a>(
        &'a self,
        target: &'a OutletTarget,
        delay: Duration,
    ) -> DriverFuture<'a, DriverReply> {
        // pdudaemon takes whole seconds (`int(delay)`); round up so the board is off long enough.
        let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        Box::pin(self.call("reboot", target, Some(secs)))
    }
}

/// Netio's JSON API (`/netio.json`, protocol "JSON M2M API" v2): POST
/// `{"Outputs":[{"ID":n,"Action":0|1}]}` with basic authentication, the reply lists every
/// output's `State`; GET reads them.
#[derive(Debug)]
pub struct NetioDriver {
    url: String,
    username: String,
    password: String,
    http: reqwest::Client,
}

#[derive(Debug, Deserialize)]
struct NetioStatus {
    #[serde(rename = "Outputs")]
    outputs: Vec<NetioOutput>,
}

#[derive(Debug, Deserialize)]
struct NetioOutput {
    #[serde(rename = "ID")]
    id: u32,
    #[serde(rename = "State")]
    state: i64,
}

impl NetioDriver {
    pub fn new(url: &str, username: &str, password: &str) -> Result<Self, DriverError> {
        Ok(Self {
            url: format!("{}/netio.json", url.trim_end_matches('/')),
            username: username.to_string(),
            password: password.to_string(),
            http: client()?,
        })
    }

    fn state_of(&self, text: &str, id: u32) -> Result<OutletState, DriverError> {
        let status: NetioStatus = serde_json::from_str(text).map_err(|e| {
            DriverError::new(
                DriverErrorKind::BadReply,
                format!("{}: not Netio JSON: {e}", self.url),
            )
        })?;
        let out = status.outputs.iter().find(|o| o.id == id).ok_or_else(|| {
            DriverError::new(
                DriverErrorKind::Refused,
                format!("{}: the PDU has no output {id}", self.url),
            )
        })?;
        match out.state {
            1 => Ok(OutletState::On),
            0 => Ok(OutletState::Off),
            s => Err(DriverError::new(
                DriverErrorKind::BadReply,
                format!("output {id} has State {s}"),
            )),
        }
    }
}

impl PowerDriver for NetioDriver {
    fn kind(&self) -> &'static str {
        "netio"
    }

    fn set<'a>(&'a self, target: &'a OutletTarget, on: bool) -> DriverFuture<'a, DriverReply> {
        Box::pin(async move {
            let id = target.number()?;
            let action = u8::from(on);
            let req = serde_json::json!({"Outputs": [{"ID": id, "Action": action}]});
            let resp = self
                .http
                .post(&self.url)
                .basic_auth(&self.username, Some(&self.password))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(req.to_string())
                .send()
                .await
                .map_err(|e| unreachable(&self.url, e))?;
            let (status, text) = body(&self.url, resp).await?;
            let state = self.state_of(&text, id)?;
            let line = format!(
                "POST {} {req} -> {} output {id} State {}",
                self.url,
                status.as_u16(),
                u8::from(state.is_on())
            );
            if state.is_on() != on {
                let mut e = DriverError::new(
                    DriverErrorKind::NotSwitched,
                    format!(
                        "Netio acknowledged output {id} with State {}",
                        u8::from(state.is_on())
                    ),
                );
                e.output = vec![line];
                return Err(e);
            }
            Ok(DriverReply::line(line))
        })
    }

    fn can_read(&self) -> bool {
        true
    }

    fn get<'a>(&'a self, target: &'a OutletTarget) -> DriverFuture<'a, (OutletState, DriverReply)> {
        Box::pin(async move {
            let id = target.number()?;
            let resp = self
                .http
                .get(&self.url)
                .basic_auth(&self.username, Some(&self.password))
                .send()
                .await
                .map_err(|e| unreachable(&self.url, e))?;
            let (_, text) = body(&self.url, resp).await?;
            let state = self.state_of(&text, id)?;
            Ok((
                state,
                DriverReply::line(format!("GET {} -> output {id} {state}", self.url)),
            ))
        })
    }
}

/// The simulator's own API over HTTP (`hw-fixtures/src/simpdu/`): `GET /outlets/N`,
/// `POST /outlets/N/on|off`, both answering `{"outlet":N,"on":bool}`.
#[derive(Debug)]
pub struct SimHttpDriver {
    url: String,
    http: reqwest::Client,
}

#[derive(Debug, Deserialize)]
struct SimOutlet {
    on: bool,
}

impl SimHttpDriver {
    pub fn new(url: &str) -> Result<Self, DriverError> {
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            http: client()?,
        })
    }

    fn parse(url: &str, text: &str) -> Result<bool, DriverError> {
        serde_json::from_str::<SimOutlet>(text)
            .map(|o| o.on)
            .map_err(|e| {
                DriverError::new(DriverErrorKind::BadReply, format!("{url}: {e}: {text:?}"))
            })
    }
}

impl PowerDriver for SimHttpDriver {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn set<'a>(&'a self, target: &'a OutletTarget, on: bool) -> DriverFuture<'a, DriverReply> {
        Box::pin(async move {
            let n = target.number()?;
            let url = format!("{}/outlets/{n}/{}", self.url, if on { "on" } else { "off" });
            let resp = self
                .http
                .post(&url)
                .send()
                .await
                .map_err(|e| unreachable(&url, e))?;
            let (status, text) = body(&url, resp).await?;
            Self::parse(&url, &text)?;
            Ok(DriverReply::line(format!(
                "POST {url} -> {} {}",
                status.as_u16(),
                text.trim_end()
            )))
        })
    }

    fn can_read(&self) -> bool {
        true
    }

    fn get<'a>(&'a self, target: &'a OutletTarget) -> DriverFuture<'a, (OutletState, DriverReply)> {
        Box::pin(async move {
            let n = target.number()?;
            let url = format!("{}/outlets/{n}", self.url);
            let resp = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| unreachable(&url, e))?;
            let (_, text) = body(&url, resp).await?;
            let on = Self::parse(&url, &text)?;
            Ok((
                OutletState::from_on(on),
                DriverReply::line(format!("GET {url} -> {}", text.trim_end())),
            ))
        })
    }
}
