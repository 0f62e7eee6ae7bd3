//! Names to ids: every command takes a resource's NAME or ID; names are looked up by listing.

use anyhow::Result;
use culvert_control_api::agents::Agent;
use culvert_control_api::connectors::Connector;
use culvert_control_api::environments::Environment;
use culvert_control_api::keys::ApiKey;
use culvert_control_api::pipelines::Pipeline;
use uuid::Uuid;

use crate::api::Api;
use crate::exit::{Failure, Kind};

/// One resource a name may refer to.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// What tells it apart from others of the same name (for example its environment).
    pub detail: String,
}

/// The id `query` names among `candidates`: an id as is, else the one candidate with that name.
pub fn pick(kind: &str, query: &str, candidates: &[Candidate]) -> Result<Uuid, Failure> {
    if let Ok(id) = Uuid::try_parse(query) {
        return Ok(id);
    }
    let hits: Vec<&Candidate> = candidates.iter().filter(|c| c.name == query).collect();
    match hits.as_slice() {
        [one] => Ok(one.id),
        [] => {
            let mut msg = format!("no {kind} named {query:?}");
            let mut names: Vec<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
            names.sort();
            names.dedup();
            if names.is_empty() {
                msg.push_str(&format!(" (there are no {kind}s)"));
            } else if names.len() <= 10 {
                msg.push_str(&format!(" (there are: {})", names.join(", ")));
            }
            Err(Failure::new(Kind::NotFound, msg))
        }
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|c| {
                    if c.detail.is_empty() {
                        c.id.to_string()
                    } else {
                        format!("{} ({})", c.id, c.detail)
                    }
                })
                .collect();
            Err(Failure::new(
                Kind::Invalid,
                format!(
                    "{} {kind}s are named {query:?}: {}; give the id instead",
                    many.len(),
                    list.join(", ")
                ),
            ))
        }
    }
}

/// Whether `query` is an id, so no listing is needed.
fn as_id(query: &str) -> Option<Uuid> {
    Uuid::try_parse(query).ok()
}

/// An environment's id.
pub async fn environment(api: &Api, query: &str) -> Result<Uuid> {
    if let Some(id) = as_id(query) {
        return Ok(id);
    }
    let list = api.list_all::<Environment>("/v1/environments", &[]).await?;
    let c: Vec<Candidate> = list
        .items
        .iter()
        .map(|e| Candidate {
            id: e.id,
            name: e.name.clone(),
            detail: String::new(),
        })
        .collect();
    Ok(pick("environment", query, &c)?)
}

/// A connector's id; names are unique only within an environment.
pub async fn connector(api: &Api, query: &str, environment: Option<Uuid>) -> Result<Uuid> {
    if let Some(id) = as_id(query) {
        return Ok(id);
    }
    let filter: Vec<(&str, String)> = environment
        .iter()
        .map(|e| ("environment_id", e.to_string()))
        .collect();
    let list = api.list_all::<Connector>("/v1/connectors", &filter).await?;
    let c: Vec<Candidate> = list
        .items
        .iter()
        .map(|x| Candidate {
            id: x.id,
            name: x.name.clone(),
            detail: format!("environment {}", x.environment_id),
        })
        .collect();
    Ok(pick("connector", query, &c)?)
}

/// A pipeline's id.
pub async fn pipeline(api: &Api, query: &str) -> Result<Uuid> {
    if let Some(id) = as_id(query) {
        return Ok(id);
    }
    let list = api.list_all::<Pipeline>("/v1/pipelines", &[]).await?;
    let c: Vec<Candidate> = list
        .items
        .iter()
        .map(|p| Candidate {
            id: p.id,
            name: p.name.clone(),
            detail: String::new(),
        })
        .collect();
    Ok(pick("pipeline", query, &c)?)
}

/// An agent's id (agents are named after their host, so names often repeat).
pub async fn agent(api: &Api, query: &str) -> Result<Uuid> {
    if let Some(id) = as_id(query) {
        return Ok(id);
    }
    let list = api.list_all::<Agent>("/v1/agents", &[]).await?;
    let c: Vec<Candidate> = list
        .items
        .iter()
        .map(|a| Candidate {
            id: a.id,
            name: a.name.clone(),
            detail: format!("environment {}", a.environment_id),
        })
        .collect();
    Ok(pick("agent", query, &c)?)
}

/// An API key's id.
pub async fn api_key(api: &Api, query: &str) -> Result<Uuid> {
    if let Some(id) = as_id(query) {
        return Ok(id);
    }
    let list = api.list_all::<ApiKey>("/v1/api-keys", &[]).await?;
    let c: Vec<Candidate> = list
        .items
        .iter()
        .map(|k| Candidate {
            id: k.id,
            name: k.name.clone(),
            detail: format!("prefix {}", k.prefix),
        })
        .collect();
    Ok(pick("API key", query, &c)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands() -> Vec<Candidate> {
        let c = |n: u128, name: &str, detail: &str| Candidate {
            id: Uuid::from_u128(n),
            name: name.into(),
            detail: detail.into(),
        };
        vec![
            c(1, "pg-src", "environment a"),
            c(2, "pg-dst", "environment a"),
            c(3, "pg-src", "environment b"),
            c(4, "solo", ""),
        ]
    }

    #[test]
    fn a_unique_name_resolves() {
        assert_eq!(
            pick("connector", "solo", &cands()).unwrap(),
            Uuid::from_u128(4)
        );
        assert_eq!(
            pick("connector", "pg-dst", &cands()).unwrap(),
            Uuid::from_u128(2)
        );
    }

    #[test]
    fn an_id_is_taken_as_is() {
        let id = Uuid::from_u128(99).to_string();
        assert_eq!(
            pick("connector", &id, &cands()).unwrap(),
            Uuid::from_u128(99)
        );
    }

    #[test]
    fn a_missing_name_lists_what_exists() {
        let e = pick("connector", "nope", &cands()).unwrap_err();
        assert_eq!(e.kind, Kind::NotFound);
        assert_eq!(
            e.message,
            "no connector named \"nope\" (there are: pg-dst, pg-src, solo)"
        );
        let e = pick("pipeline", "x", &[]).unwrap_err();
        assert_eq!(
            e.message,
            "no pipeline named \"x\" (there are no pipelines)"
        );
    }

    #[test]
    fn an_ambiguous_name_names_the_candidates() {
        let e = pick("connector", "pg-src", &cands()).unwrap_err();
        assert_eq!(e.kind, Kind::Invalid);
        assert!(
            e.message.starts_with("2 connectors are named \"pg-src\": "),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains(&format!("{} (environment a)", Uuid::from_u128(1)))
        );
        assert!(
            e.message
                .contains(&format!("{} (environment b)", Uuid::from_u128(3)))
        );
        assert!(e.message.ends_with("give the id instead"));
    }

    #[test]
    fn names_are_exact() {
        assert!(pick("connector", "SOLO", &cands()).is_err());
        assert!(pick("connector", "sol", &cands()).is_err());
    }
}
