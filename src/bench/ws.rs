//! A protoo client over a real WebSocket, for the load tool: requests with
//! their round-trip time, notifications counted.

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use serde_json::{json, Value};
use smol::net::TcpStream;
use smol::stream::StreamExt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct WsClient {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    /// Notifications received so far.
    pub notifications: u64,
}

impl WsClient {
    pub async fn connect(addr: SocketAddr, uid: &str) -> Result<WsClient, String> {
        let mut req = format!("ws://{addr}/ws?peer={uid}")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "protoo".parse().expect("a header"),
        );
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (ws, _) = async_tungstenite::client_async(req, tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(WsClient {
            ws,
            next_id: 1,
            notifications: 0,
        })
    }

    /// Sends a request; returns its response and the time it took.
    pub async fn request(
        &mut self,
        method: &str,
        data: Value,
    ) -> Result<(Value, Duration), String> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"request": true, "id": id, "method": method, "data": data});
        let sent = Instant::now();
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let text = match self.ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("closed".into()),
            };
            let v: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
            if v["response"] == true && v["id"] == id {
                return Ok((v, sent.elapsed()));
            }
            self.notifications += 1;
        }
    }

    /// Like `request`, but an error response is an error.
    pub async fn ok(&mut self, method: &str, data: Value) -> Result<(Value, Duration), String> {
        let (v, rtt) = self.request(method, data).await?;
        if v["ok"] != true {
            return Err(format!("{method}: {} {}", v["errorCode"], v["errorReason"]));
        }
        Ok((v["data"].clone(), rtt))
    }
}
