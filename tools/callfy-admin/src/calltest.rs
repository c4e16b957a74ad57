//! `callfy-admin call-test MERCHANT PHONE`: a test call from the merchant's voice agent to a phone
//! of the merchant's own (an operator runs it with the merchant on the line). It goes through the
//! same path as a real call: a cart of its own (`calltest-…`, one item "Callfy test call", the
//! store's front page as its link), a voice consent recorded as such (source `admin`, evidence naming the command), and the
//! flow's voice step queued for the worker, which applies every rule (quiet hours included).

use callfy_shared::adapters::queue::OutreachQueue;
use callfy_shared::adapters::store::Store;
use callfy_shared::app::consent;
use callfy_shared::domain::cart::{Cart, CartItem, CheckoutSnapshot};
use callfy_shared::domain::consent::{ConsentAction, ConsentEvent, ConsentSource, ConsentStatus, Evidence, Verdict};
use callfy_shared::domain::flow::OutreachJob;
use callfy_shared::domain::merchant::{Channel, Merchant};
use callfy_shared::ports::{ConsentAppend, IngestWrite, PortError};
use callfy_shared::{CartToken, Phone};
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum CallTestError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Port(#[from] PortError),
}

/// What was set up: the test cart and the flow step queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTest {
    pub cart: CartToken,
    pub step: u8,
}

pub async fn call_test(
    store: &Store,
    queue: &OutreachQueue,
    merchant: &Merchant,
    phone: &Phone,
    now: DateTime<Utc>,
) -> Result<CallTest, CallTestError> {
    let step = merchant
        .flow
        .iter()
        .position(|s| s.channel == Channel::Voice)
        .ok_or_else(|| CallTestError::Refused(format!("{}'s flow has no voice step", merchant.id)))?;
    if merchant.voice_from.is_none() {
        return Err(CallTestError::Refused(format!("{} has no voice_from", merchant.id)));
    }
    if store.get_merchant(&merchant.id).await?.is_none() {
        return Err(CallTestError::Refused(format!("no merchant {}", merchant.id)));
    }
    // Calls need a link to offer: the store's own front page stands in for a cart's.
    let store_url = merchant
        .shop_domain
        .as_ref()
        .map(|d| format!("https://{d}/"))
        .or_else(|| merchant.support.url.clone())
        .ok_or_else(|| CallTestError::Refused(format!("{} has neither shop_domain nor support.url", merchant.id)))?;
    let token = CartToken::parse(&format!("calltest-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]))
        .map_err(|e| CallTestError::Refused(e.to_string()))?;
    let snap = CheckoutSnapshot {
        token: token.clone(),
        checkout_id: None,
        customer_id: None,
        phone: Some(phone.clone()),
        email: None,
        first_name: None,
        recovery_url: Some(store_url),
        total_price: None,
        currency: None,
        item_count: 1,
        items: CartItem::new("Callfy test call", 1).into_iter().collect(),
        province_code: None,
        country_code: None,
        locale: None,
        // Dated so the voice step is due at once (steps are due relative to the cart's update).
        updated_at: now - chrono::Duration::minutes(i64::from(merchant.flow[step].after_minutes)),
        completed: false,
        attributes: Vec::new(),
    };
    let mut cart = Cart::new(merchant.id.clone(), snap, now);
    cart.version = 1;
    // A test never overrides an opt-out: whoever said stop is not called, tests included. The
    // consent is appended with the cart, in one transaction conditioned on the state read here,
    // so an opt-out that lands in between cancels the whole test.
    let state = store.consent_state(&merchant.id, phone, Channel::Voice).await?;
    if state.status == ConsentStatus::OptedOut {
        return Err(CallTestError::Refused("this number opted out of calls; it is not called, tests included".into()));
    }
    let event = ConsentEvent {
        channel: Channel::Voice,
        action: ConsentAction::OptIn,
        source: ConsentSource::Admin,
        occurred_at: now,
        recorded_at: now,
        evidence: Evidence {
            consent_text: Some(
                "Test call to the merchant's own phone, requested by an operator (callfy-admin call-test)".into(),
            ),
            collected_from: Some("call_test".into()),
            ..Default::default()
        },
    };
    let consents = match state.verdict(&event) {
        Verdict::Accept => vec![ConsentAppend {
            merchant_id: merchant.id.clone(),
            phone: phone.clone(),
            state,
            event,
            purge_at: consent::purge_at(merchant, now),
        }],
        _ => Vec::new(),
    };
    let write = IngestWrite {
        deletions_seen: Vec::new(),
        merchant_id: merchant.id.clone(),
        event_key: format!("admin#{token}"),
        received_at: now,
        cart: Some((cart, None)),
        consents,
    };
    match store.write_ingest(&write).await {
        Ok(_) => {}
        Err(PortError::Conflict) => {
            return Err(CallTestError::Refused("the number's consent changed meanwhile; nothing was queued".into()));
        }
        Err(e) => return Err(e.into()),
    }
    let job =
        OutreachJob { merchant_id: merchant.id.clone(), cart_token: token.clone(), step: step as u8, due_at: now };
    queue.enqueue(&job, 0).await?;
    Ok(CallTest { cart: token, step: step as u8 })
}
