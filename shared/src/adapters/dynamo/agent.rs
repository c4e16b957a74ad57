//! Voice agent sessions: the connection pointer (`WS#{connection}`, no personal data, a day's
//! TTL), the session with its transcript under the call in the person's partition
//! (`AGENT#{call}`), and the merchant's daily model spend. Every write that speaks for a turn is
//! conditional on the session's turn.

use super::*;
use crate::domain::agent::{AgentSession, Outcome, TranscriptLine};
use crate::domain::voice::{CallLogEntry, CallRef};
use crate::ports::agent::{ConnectionBinding, SessionKey};

const CONNECTION_SK: &str = "CONN";
const CONNECTION_TTL_HOURS: i64 = 24;
const SPEND_TTL_DAYS: i64 = 3;

fn connection_key(connection_id: &str) -> Item {
    key(format!("WS#{connection_id}"), CONNECTION_SK)
}

fn session_key(k: &SessionKey) -> Item {
    key(customer_pk(&k.merchant_id, &k.phone), format!("AGENT#{}", k.call_sid))
}

fn av<T: Serialize>(v: &T) -> Result<AttributeValue, PortError> {
    serde_dynamo::to_attribute_value(v).map_err(|e| PortError::Encode(e.to_string()))
}

impl Store {
    /// An update of the session item (`#pk` names its key attribute for the conditions).
    fn update_session(
        &self,
        k: &SessionKey,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(session_key(k)))
            .expression_attribute_names("#pk", attr::PK)
    }

    pub async fn bind_connection(
        &self,
        connection_id: &str,
        call: &CallRef,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let mut item = connection_key(connection_id);
        item.insert("m".into(), s(call.merchant_id.as_str()));
        item.insert("c".into(), s(call.cart_token.as_str()));
        item.insert("s".into(), n(call.step));
        item.insert(attr::EXPIRES_AT.into(), n((now + Duration::hours(CONNECTION_TTL_HOURS)).timestamp()));
        self.put_item(item).await
    }

    /// The connection's call and, once `setup` named it, where its session lives: found through
    /// the call's SID index entry (whose sort key is the person's partition), so the pointer
    /// itself never holds the number.
    pub async fn connection(&self, connection_id: &str) -> Result<Option<ConnectionBinding>, PortError> {
        let Some(item) = self.get(format!("WS#{connection_id}"), CONNECTION_SK, "GetItem").await? else {
            return Ok(None);
        };
        let parsed = (|| {
            Some(CallRef {
                merchant_id: MerchantId::parse(get_s(&item, "m")?).ok()?,
                cart_token: CartToken::parse(get_s(&item, "c")?).ok()?,
                step: item.get("s")?.as_n().ok()?.parse().ok()?,
            })
        })();
        let Some(call) = parsed else { return Err(PortError::Decode("connection pointer".into())) };
        // The index entry's own key names the partition: no second read of the call.
        let session = match get_s(&item, "call_sid") {
            None => None,
            Some(sid) => self
                .query_lookup(keys::sid_lookup(sid))
                .await?
                .iter()
                .filter(|i| get_s(i, attr::SK).is_some_and(|sk| sk.starts_with(keys::CALL_PREFIX)))
                .find_map(|i| get_s(i, attr::PK).and_then(keys::parse_customer_pk))
                .map(|(merchant_id, phone)| SessionKey { merchant_id, phone, call_sid: sid.to_string() }),
        };
        Ok(Some(ConnectionBinding { call, session }))
    }

    pub async fn open_session(&self, connection_id: &str, session: &AgentSession) -> Result<AgentSession, PortError> {
        let k = SessionKey {
            merchant_id: session.merchant_id.clone(),
            phone: session.phone.clone(),
            call_sid: session.call_sid.clone(),
        };
        let mut item = to_item(session)?;
        item.extend(session_key(&k));
        // Tagged: a transcript may outlive the partition's logs (its own retention).
        let item = self.with_purge(self.tagged(item, &session.merchant_id), session.purge_at);
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .send()
            .await;
        conditional(res, "PutItem")?;
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(connection_id)))
            .update_expression("SET call_sid = :sid")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":sid", s(&session.call_sid))
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        self.session(&k).await?.ok_or_else(|| PortError::NotFound("agent session".into()))
    }

    pub async fn session(&self, k: &SessionKey) -> Result<Option<AgentSession>, PortError> {
        let sk = format!("AGENT#{}", k.call_sid);
        self.get(customer_pk(&k.merchant_id, &k.phone), sk, "GetItem").await?.map(from_item).transpose()
    }

    pub async fn next_turn(&self, k: &SessionKey, seen: u32, line: Option<&TranscriptLine>) -> Result<bool, PortError> {
        let mut req = self
            .update_session(k)
            // An ended session takes no new turn (an opt-out ended it).
            .condition_expression("attribute_exists(#pk) AND turn = :seen AND ended <> :yes")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":seen", n(seen))
            .expression_attribute_values(":next", n(seen + 1));
        req = match line {
            Some(l) => req
                .update_expression("SET turn = :next, transcript = list_append(transcript, :l)")
                .expression_attribute_values(":l", AttributeValue::L(vec![av(l)?])),
            None => req.update_expression("SET turn = :next"),
        };
        Ok(conditional(req.send().await, "UpdateItem")?.is_some())
    }

    pub async fn say(&self, k: &SessionKey, line: &TranscriptLine) -> Result<bool, PortError> {
        let res = self
            .update_session(k)
            .update_expression("SET transcript = list_append(transcript, :l)")
            .condition_expression("attribute_exists(#pk) AND turn = :t AND ended <> :yes")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":t", n(line.turn))
            .expression_attribute_values(":l", AttributeValue::L(vec![av(line)?]))
            .send()
            .await;
        Ok(conditional(res, "UpdateItem")?.is_some())
    }

    /// Appends a line whatever the turn (the confirmation of an opt-out that ended the session).
    pub async fn append_line(&self, k: &SessionKey, line: &TranscriptLine) -> Result<(), PortError> {
        let res = self
            .update_session(k)
            .update_expression("SET transcript = list_append(transcript, :l)")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_values(":l", AttributeValue::L(vec![av(line)?]))
            .send()
            .await;
        conditional(res, "UpdateItem").map(|_| ())
    }

    pub async fn use_tool(&self, k: &SessionKey, tool: &str, once: bool) -> Result<bool, PortError> {
        let mut req = self
            .update_session(k)
            .update_expression("SET tools_used = list_append(tools_used, :l)")
            .expression_attribute_values(":l", AttributeValue::L(vec![s(tool)]));
        req = if once {
            req.condition_expression("attribute_exists(#pk) AND NOT contains(tools_used, :t)")
                .expression_attribute_values(":t", s(tool))
        } else {
            req.condition_expression("attribute_exists(#pk)")
        };
        Ok(conditional(req.send().await, "UpdateItem")?.is_some())
    }

    pub async fn spend(&self, k: &SessionKey, tokens: u32) -> Result<u32, PortError> {
        let out = self
            .update_session(k)
            .update_expression("ADD tokens_used :n")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_values(":n", n(tokens))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        Ok(number(out.attributes.as_ref(), "tokens_used") as u32)
    }

    pub async fn malformed(&self, connection_id: &str) -> Result<u32, PortError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(connection_id)))
            .update_expression("ADD malformed :one")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await;
        // No pointer (a connection we never accepted): the session ends at once.
        Ok(conditional(out, "UpdateItem")?.map_or(u32::MAX, |o| number(o.attributes.as_ref(), "malformed") as u32))
    }

    pub async fn finish_session(
        &self,
        k: &SessionKey,
        outcome: Outcome,
        overwrite: bool,
        end: bool,
    ) -> Result<(), PortError> {
        let set = if overwrite { "outcome = :o" } else { "outcome = if_not_exists(outcome, :o)" };
        let set = if end { format!("SET {set}, ended = :t") } else { format!("SET {set}") };
        let mut req = self
            .update_session(k)
            .update_expression(set)
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_values(":o", av(&outcome)?);
        if end {
            req = req.expression_attribute_values(":t", AttributeValue::Bool(true));
        }
        conditional(req.send().await, "UpdateItem").map(|_| ())
    }

    pub async fn merchant_spend(&self, m: &MerchantId, day: &str, tokens: u32) -> Result<u64, PortError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(merchant_pk(m), format!("AGENTSPEND#{day}"))))
            .update_expression("ADD tokens :n SET #exp = if_not_exists(#exp, :exp)")
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":n", n(tokens))
            .expression_attribute_values(":exp", n((Utc::now() + Duration::days(SPEND_TTL_DAYS)).timestamp()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        Ok(number(out.attributes.as_ref(), "tokens"))
    }

    /// The outcome and summary of an agent call, on its call log entry.
    pub async fn note_outcome(&self, entry: &CallLogEntry, outcome: Outcome, summary: &str) -> Result<(), PortError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(
                customer_pk(&entry.merchant_id, &entry.phone),
                keys::call_sk(entry.created_at, &entry.call_sid),
            )))
            .update_expression("SET outcome = :o, summary = :s")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":o", av(&outcome)?)
            .expression_attribute_values(":s", s(summary))
            .send()
            .await;
        conditional(res, "UpdateItem").map(|_| ())
    }
}

fn number(attrs: Option<&HashMap<String, AttributeValue>>, name: &str) -> u64 {
    attrs.and_then(|a| a.get(name)).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}
