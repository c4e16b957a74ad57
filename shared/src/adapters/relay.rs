//! Replies to a ConversationRelay session through API Gateway's `@connections` API
//! (`PostToConnection`), one HTTPS call per message.

use crate::domain::agent::RelayOut;
use crate::ports::{PortError, RelayConnections};
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::primitives::Blob;

#[derive(Debug, Clone)]
pub struct ApiGatewayRelay {
    client: Client,
}

impl ApiGatewayRelay {
    /// `endpoint` is the stage's `@connections` base: `https://{api}.execute-api.{region}.amazonaws.com/{stage}`.
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: &str) -> Self {
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(sdk).endpoint_url(endpoint).build();
        Self { client: Client::from_conf(conf) }
    }

    /// The `@connections` endpoint of a WebSocket URL: `wss://host/stage` → `https://host/stage`.
    pub fn endpoint_for(public_ws_url: &str) -> String {
        let rest = public_ws_url.split_once("://").map_or(public_ws_url, |(_, r)| r);
        format!("https://{rest}")
    }
}

impl RelayConnections for ApiGatewayRelay {
    async fn post(&self, connection_id: &str, msg: &RelayOut) -> Result<(), PortError> {
        let res = self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(msg.json().into_bytes()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_gone_exception()) => {
                Err(PortError::NotFound("connection gone".into()))
            }
            Err(e) => Err(super::aws::sdk_error("ApiGatewayManagement", "PostToConnection", e)),
        }
    }
}
