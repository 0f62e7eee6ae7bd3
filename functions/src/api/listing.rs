//! One way to list a resource: cursor paging over its `seq`, optionally by environment.

use axum::http::StatusCode;
use deadpool_postgres::GenericClient;
use serde::Serialize;
use tokio_postgres::Row;

use super::{Outcome, Req};
use crate::error::ApiResult;
use crate::extract::{page, paging, parse_id, reply};
use crate::store::Sql;

/// How a resource is listed.
pub struct Listing<T> {
    /// `select COLUMNS from TABLE ALIAS`; the last column is the row's `seq`.
    pub select: String,
    /// The table alias (`c` in `connectors c`).
    pub alias: &'static str,
    /// Extra condition, for example `revoked_at is null`.
    pub only: Option<&'static str>,
    /// Whether `?environment_id=` filters the list.
    pub by_environment: bool,
    /// Row to item.
    pub from_row: fn(&Row) -> ApiResult<T>,
}

/// One page of the resource, as the request's `limit`, `cursor` and filter ask.
pub async fn list<T: Serialize>(
    client: &impl GenericClient,
    req: &Req,
    l: Listing<T>,
) -> ApiResult<Outcome> {
    let p = paging(&req.query)?;
    let a = l.alias;
    let mut sql = format!("{} where {a}.seq > $1", l.select);
    if let Some(only) = l.only {
        sql.push_str(&format!(" and {only}"));
    }
    let env = req
        .query
        .get("environment_id")
        .map(|s| parse_id("environment", s))
        .transpose()?;
    let limit = p.limit + 1;
    let rows = if l.by_environment {
        sql.push_str(&format!(
            " and ($3::uuid is null or {a}.environment_id = $3) order by {a}.seq limit $2"
        ));
        client.q(&sql, &[&p.after, &limit, &env]).await?
    } else {
        sql.push_str(&format!(" order by {a}.seq limit $2"));
        client.q(&sql, &[&p.after, &limit]).await?
    };
    let items = rows
        .iter()
        .map(|r| Ok((r.get::<_, i64>(r.len() - 1), (l.from_row)(r)?)))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(reply(StatusCode::OK, &page(items, p), None).into())
}
