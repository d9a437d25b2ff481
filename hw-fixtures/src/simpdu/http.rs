//! The simulated PDU over HTTP, so labd reaches it the way it reaches a real one:
//!
//! - its own API: `GET /outlets/N` and `POST /outlets/N/on|off`, answering
//!   `{"outlet":N,"on":BOOL}` (500 with `{"error":...}` for an injected failure);
//! - Netio's JSON API: `GET /netio.json` and `POST /netio.json` with
//!   `{"Outputs":[{"ID":N,"Action":0|1|4|5|6}]}`, basic authentication, the reply listing every
//!   output (`ID`, `Name`, `State`, `Action`, `Delay`...) as a Netio 4All does.
//!
//! A dead PDU (`Faults::dead`) accepts the connection and never answers.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::{SimError, SimPdu};

#[derive(Clone)]
struct AppState {
    pdu: SimPdu,
    /// Netio basic-auth credentials.
    auth: (String, String),
}

/// A running server; stops when dropped.
pub struct SimPduServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SimPduServer {
    /// Serves `pdu` on a free loopback port (Netio user/password `admin`/`admin`).
    pub async fn start(pdu: SimPdu) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::start_on(pdu, listener, ("admin", "admin"))
    }

    pub fn start_on(
        pdu: SimPdu,
        listener: tokio::net::TcpListener,
        auth: (&str, &str),
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let app = router(pdu, auth);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SimPduServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The router, for embedding in another server.
pub fn router(pdu: SimPdu, auth: (&str, &str)) -> Router {
    Router::new()
        .route("/outlets/{n}", get(outlet_get))
        .route("/outlets/{n}/{action}", post(outlet_set))
        .route("/netio.json", get(netio_get).post(netio_post))
        .with_state(AppState {
            pdu,
            auth: (auth.0.to_string(), auth.1.to_string()),
        })
}

fn sim_error(e: SimError) -> Response {
    let status = match e {
        SimError::Injected { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        SimError::NoSuchOutlet { .. } => StatusCode::NOT_FOUND,
    };
    (status, axum::Json(json!({"error": e.to_string()}))).into_response()
}

async fn outlet_get(State(s): State<AppState>, Path(n): Path<u32>) -> Response {
    match s.pdu.get(n).await {
        Ok(on) => axum::Json(json!({"outlet": n, "on": on})).into_response(),
        Err(e) => sim_error(e),
    }
}

async fn outlet_set(State(s): State<AppState>, Path((n, action)): Path<(u32, String)>) -> Response {
    let on = match action.as_str() {
        "on" => true,
        "off" => false,
        _ => return (StatusCode::NOT_FOUND, "unknown action\n").into_response(),
    };
    match s.pdu.set(n, on).await {
        Ok(ack) => axum::Json(json!({"outlet": n, "on": ack})).into_response(),
        Err(e) => sim_error(e),
    }
}

fn authorised(s: &AppState, headers: &HeaderMap) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(b64) = v.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    raw == format!("{}:{}", s.auth.0, s.auth.1).into_bytes()
}

fn unauthorised() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"netio\"")],
        "401 Unauthorized\n",
    )
        .into_response()
}

/// The full Netio status document, with `acks` overriding what a stuck PDU claims.
fn netio_status(pdu: &SimPdu, acks: &[(u32, bool)]) -> serde_json::Value {
    let n = pdu.outlet_count();
    let outputs: Vec<_> = (1..=n)
        .map(|id| {
            let real = pdu.state(id).unwrap_or(false);
            let state = acks
                .iter()
                .rev()
                .find(|(i, _)| *i == id)
                .map_or(real, |(_, s)| *s);
            json!({"ID": id, "Name": format!("output_{id}"), "State": u8::from(state), "Action": 6,
                   "Delay": 2000, "Current": 0, "PowerFactor": 0.0, "Load": 0, "Energy": 0})
        })
        .collect();
    json!({
        "Agent": {"Model": "NETIO 4All", "Version": "3.4.0", "JSONVer": "2.1",
                  "DeviceName": pdu.name(), "VendorID": 0, "OemID": 0,
                  "SerialNumber": "24:A4:2C:00:00:00", "Uptime": 1, "Time": "1970-01-01T00:00:00+00:00",
                  "Timezone": 0, "NumOutputs": n},
        "Outputs": outputs,
    })
}

async fn netio_get(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if !authorised(&s, &headers) {
        return unauthorised();
    }
    // A status read is a request to the PDU like any other (faults, overlap accounting).
    if let Err(e) = s.pdu.get(1).await {
        return sim_error(e);
    }
    axum::Json(netio_status(&s.pdu, &[])).into_response()
}

#[derive(Deserialize)]
struct NetioRequest {
    #[serde(rename = "Outputs")]
    outputs: Vec<NetioAction>,
}

#[derive(Deserialize)]
struct NetioAction {
    #[serde(rename = "ID")]
    id: u32,
    #[serde(rename = "Action")]
    action: u8,
}

async fn netio_post(State(s): State<AppState>, headers: HeaderMap, body: String) -> Response {
    if !authorised(&s, &headers) {
        return unauthorised();
    }
    let Ok(req) = serde_json::from_str::<NetioRequest>(&body) else {
        return (StatusCode::BAD_REQUEST, "400 Bad Request\n").into_response();
    };
    let mut acks = Vec::new();
    for o in req.outputs {
        let on = match o.action {
            0 => false,
            1 => true,
            4 => !s.pdu.state(o.id).unwrap_or(false),
            5 | 6 => continue,
            _ => return (StatusCode::BAD_REQUEST, "400 Bad Request\n").into_response(),
        };
        match s.pdu.set(o.id, on).await {
            Ok(ack) => acks.push((o.id, ack)),
            Err(SimError::NoSuchOutlet { .. }) => {
                return (StatusCode::BAD_REQUEST, "400 Bad Request\n").into_response();
            }
            Err(e) => return sim_error(e),
        }
    }
    axum::Json(netio_status(&s.pdu, &acks)).into_response()
}
