//! The channel record of the seed API (`id`, `pattern`, `description`, `webhookUrls`, `enabled`,
//! `createdAt`, `updatedAt`) and the REST bodies that create and update it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ChannelPattern;
use crate::timestamp::Timestamp;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRecord {
    pub id: Uuid,
    pub pattern: ChannelPattern,
    pub description: Option<String>,
    pub webhook_urls: Option<Vec<String>>,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `POST /api/realtime/channels` body. Unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateChannel {
    pub pattern: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub webhook_urls: Option<Vec<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `PUT /api/realtime/channels/{id}` body: only the fields given change. `description` and
/// `webhookUrls` may be set to `null` to clear them, so "absent" and "null" are kept apart.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateChannel {
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub webhook_urls: Option<Option<Vec<String>>>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Checks webhook URLs: absolute http(s) URLs with a host, at most 16 per channel.
pub fn validate_webhook_urls(urls: &[String]) -> Result<(), String> {
    if urls.len() > 16 {
        return Err("at most 16 webhookUrls per channel".into());
    }
    for u in urls {
        let uri: http::Uri = u
            .parse()
            .map_err(|_| format!("webhookUrls: `{u}` is not a URL"))?;
        let ok_scheme = matches!(uri.scheme_str(), Some("http" | "https"));
        if !ok_scheme || uri.host().is_none() {
            return Err(format!(
                "webhookUrls: `{u}` must be an absolute http(s) URL"
            ));
        }
    }
    Ok(())
}
