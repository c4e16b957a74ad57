//! Our own recovery links: the link a message carries (`domain::link` decides when it is
//! ours), and a click on one (`GET /r/{code}`): counted, then answered with a redirect to the
//! cart, a fresh single-use URL from the BigCommerce store API for a BigCommerce cart.

use crate::clock::Clock;
use crate::domain::cart::Cart;
use crate::domain::link::{LinkCode, RecoveryLink, wraps};
use crate::domain::merchant::{Channel, Merchant, Platform};
use crate::domain::message::tracked_link;
use crate::ports::storefront::StoreApiError;
use crate::ports::{CartStore, Classify, ErrorKind, PortError, RecoveryLinks, StorefrontCarts, WebhookMerchants};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use thiserror::Error;
use tracing::{info, warn};

/// The link a message about `cart` carries for `step` on `channel`: the store's own URL (with
/// the campaign parameters), or, for a BigCommerce cart or a merchant counting clicks, our
/// `{public_base_url}/r/{code}`, stored before it goes out (a retried send reuses it).
#[allow(clippy::too_many_arguments)]
pub async fn message_link(
    store: &impl RecoveryLinks,
    public_base_url: &str,
    merchant: &Merchant,
    cart: &Cart,
    url: &str,
    step: u8,
    channel: Channel,
    now: DateTime<Utc>,
) -> Result<String, PortError> {
    if !wraps(merchant) {
        return Ok(tracked_link(url, channel.as_str()));
    }
    let code = LinkCode::for_message(&merchant.id, &cart.token, step, channel);
    let link = RecoveryLink {
        code: code.clone(),
        merchant_id: merchant.id.clone(),
        cart_token: cart.token.clone(),
        step,
        channel,
        created_at: now,
        clicks: 0,
    };
    store.save_link(&link).await?;
    Ok(code.url(public_base_url))
}

/// What a click comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Click {
    /// 302 to this URL.
    Redirect(String),
    /// No such link (never made, or purged with its cart), or nothing left to link to.
    Unknown,
}

#[derive(Debug, Error)]
pub enum ClickError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("the store API failed: {0}")]
    StoreApi(#[source] StoreApiError),
}

impl Classify for ClickError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Port(e) => e.kind(),
            Self::StoreApi(e) => e.kind(),
        }
    }
}

/// A click on one of our links.
pub struct Clicks<'a, S, A> {
    pub store: &'a S,
    pub storefront: &'a A,
    pub clock: &'a Arc<dyn Clock>,
}

impl<S, A> Clicks<'_, S, A>
where
    S: RecoveryLinks + WebhookMerchants + CartStore,
    A: StorefrontCarts,
{
    /// Resolves `raw` (the path's code): counts the click, then finds where it leads.
    pub async fn open(&self, raw: &str) -> Result<Click, ClickError> {
        let Some(code) = LinkCode::parse(raw) else { return Ok(Click::Unknown) };
        let Some(link) = self.store.find_link(&code).await? else { return Ok(Click::Unknown) };
        let (merchant, cart) = tokio::try_join!(
            self.store.merchant_with_secrets(&link.merchant_id),
            self.store.get_cart(&link.merchant_id, &link.cart_token),
        )?;
        let (Some(merchant), Some(cart)) = (merchant, cart) else { return Ok(Click::Unknown) };
        let m = &merchant.merchant;
        // The click counts whatever comes next; a failed count never costs the shopper the cart.
        match self.store.count_click(&link, self.clock.now()).await {
            Ok(_) => {}
            Err(e) => warn!(merchant = %m.id, error = %crate::ports::chain(&e), "a click could not be counted"),
        }
        crate::metrics::count_by(crate::metrics::LINK_CLICKS, "Channel", link.channel.as_str(), 1);
        let medium = link.channel.as_str();
        if m.platform == Platform::Bigcommerce {
            let Some(bc) = &m.bigcommerce else { return Ok(Click::Unknown) };
            let token = bc.api_token.as_deref().unwrap_or_default();
            let fresh = self
                .storefront
                .fresh_redirect(&bc.store_hash, token, cart.token.as_str())
                .await
                .map_err(ClickError::StoreApi)?;
            return Ok(match fresh.and_then(|r| r.checkout_url.or(r.cart_url)) {
                Some(url) => {
                    info!(merchant = %m.id, step = link.step, "fresh BigCommerce redirect made for a click");
                    Click::Redirect(tracked_link(&url, medium))
                }
                None => Click::Unknown,
            });
        }
        Ok(match &cart.recovery_url {
            Some(url) => Click::Redirect(tracked_link(url, medium)),
            None => Click::Unknown,
        })
    }
}
