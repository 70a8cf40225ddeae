//! The policies in force, owned by the control thread: at start the set the engine saved at
//! run time (with Redis: shared by every node), else the configuration's (`[policies]`);
//! changed over REST by `project_admin` (add, delete, row level security per table), saved
//! through the engine (announced to the other nodes like a registry change), and pushed to
//! every core with the channel table before the caller is answered. Each core then ends the
//! subscriptions its subscribers are no longer allowed (`core::access`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Control, RestOk, registry};
use crate::{
    engine::Engine,
    http::ApiError,
    policy::{Policy, PolicySet, Rls},
};

/// A policy set as the engine stores it: row level security per table and each policy as
/// one `CREATE POLICY` statement.
#[derive(Debug, Serialize, Deserialize)]
struct PoliciesDoc {
    rls: RlsDoc,
    policies: Vec<String>,
}

/// `PUT /api/realtime/permissions/rls` and its answer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlsDoc {
    pub channels: bool,
    pub messages: bool,
}

/// A change of the policies (`RestReq::Policies`).
pub enum PolicyReq {
    Add(String),
    Delete(String),
    Rls(RlsDoc),
}

fn doc_of(set: &PolicySet) -> String {
    let doc = PoliciesDoc {
        rls: RlsDoc {
            channels: set.rls.channels,
            messages: set.rls.messages,
        },
        policies: set.policies().iter().map(Policy::to_sql).collect(),
    };
    serde_json::to_string(&doc).expect("serializing a policy set cannot fail")
}

fn set_of(doc: &str) -> Result<PolicySet, String> {
    let d: PoliciesDoc = serde_json::from_str(doc).map_err(|e| e.to_string())?;
    let mut set = PolicySet::new(Rls {
        channels: d.rls.channels,
        messages: d.rls.messages,
    });
    for sql in &d.policies {
        let p = Policy::parse(sql).map_err(|e| e.to_string())?;
        set.add(p).map_err(|e| e.to_string())?;
    }
    Ok(set)
}

/// The set to start with: the engine's saved one, else `configured`.
pub(super) async fn initial<E: Engine>(
    engine: &mut E,
    configured: &Arc<PolicySet>,
) -> (Arc<PolicySet>, Option<String>) {
    match engine.load_policies().await {
        Ok(Some(doc)) => match set_of(&doc) {
            Ok(set) => {
                tracing::info!(
                    policies = set.policies().len(),
                    "policies saved at run time are in force (they replace the configuration's)"
                );
                (Arc::new(set), Some(doc))
            }
            Err(e) => {
                tracing::error!(error = %e, "the saved policy set is unreadable; the configuration's is in force");
                (configured.clone(), None)
            }
        },
        Ok(None) => (configured.clone(), None),
        Err(e) => {
            tracing::warn!(error = %e, "reading the saved policy set failed; the configuration's is in force");
            (configured.clone(), None)
        }
    }
}

/// After another node announced a change: the engine's set, if it differs from ours. True if
/// the policies in force changed.
pub(super) async fn refresh<E: Engine>(c: &mut Control<E>) -> bool {
    let doc = match c.engine.load_policies().await {
        Ok(Some(d)) => d,
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(error = %e, "policy reload failed; keeping the policies in force");
            return false;
        }
    };
    if c.policies_doc.as_deref() == Some(doc.as_str()) {
        return false;
    }
    match set_of(&doc) {
        Ok(set) => {
            c.policies = Arc::new(set);
            c.policies_doc = Some(doc);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "the saved policy set is unreadable; keeping the policies in force");
            false
        }
    }
}

/// Applies one change: saved through the engine, then pushed to every core.
pub(super) async fn handle<E: Engine>(
    c: &mut Control<E>,
    req: PolicyReq,
) -> Result<RestOk, ApiError> {
    let mut set = (*c.policies).clone();
    let (status, body) = match req {
        PolicyReq::Add(sql) => {
            let p = Policy::parse(&sql).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let body = serde_json::to_vec(&p.view()).expect("serializing a view cannot fail");
            set.add(p).map_err(|e| ApiError::conflict(e.to_string()))?;
            (201, body)
        }
        PolicyReq::Delete(name) => {
            set.remove(&name)
                .ok_or_else(|| ApiError::not_found(format!("no policy named `{name}`")))?;
            (204, Vec::new())
        }
        PolicyReq::Rls(r) => {
            set.rls = Rls {
                channels: r.channels,
                messages: r.messages,
            };
            (
                200,
                serde_json::to_vec(&r).expect("serializing cannot fail"),
            )
        }
    };
    let doc = doc_of(&set);
    c.engine
        .save_policies(&doc)
        .await
        .map_err(|e| ApiError::unavailable(format!("the policies could not be saved: {e}")))?;
    c.policies = Arc::new(set);
    c.policies_doc = Some(doc);
    registry::changed(c).await;
    Ok(RestOk { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_round_trips_through_its_document() {
        let mut set = PolicySet::defaults(true, false);
        set.add(
            Policy::parse(
                r#"CREATE POLICY "odd ""name""" ON realtime.messages FOR INSERT TO authenticated WITH CHECK (payload ->> 'user_id' = auth.uid())"#,
            )
            .unwrap(),
        )
        .unwrap();
        set.rls.messages = false;
        let doc = doc_of(&set);
        let back = set_of(&doc).unwrap();
        assert_eq!(doc_of(&back), doc);
        assert_eq!(
            serde_json::to_value(back.permissions()).unwrap(),
            serde_json::to_value(set.permissions()).unwrap()
        );
        assert!(!back.rls.messages && back.rls.channels);
    }
}
