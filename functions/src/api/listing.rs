//! One way to list a resource: cursor paging over its `seq`, optionally by environment; rows
//! with a column sealed at rest are opened with a key set that holds every version on the page.

use axum::http::StatusCode;
use deadpool_postgres::GenericClient;
use serde::Serialize;
use tokio_postgres::Row;

use super::{Outcome, Req};
use crate::error::ApiResult;
use crate::extract::{Paging, page, paging, parse_id, reply};
use crate::master_keys::{KeySet, MasterKeys};
use crate::store::{Sql, at_rest};

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

/// How a resource with a column sealed at rest is listed.
pub struct SealedListing<T> {
    /// `select COLUMNS from TABLE ALIAS`; the last column is the row's `seq`.
    pub select: String,
    /// The table alias.
    pub alias: &'static str,
    /// Whether `?environment_id=` filters the list.
    pub by_environment: bool,
    /// The sealed column (text, may be null).
    pub sealed: usize,
    /// Row to item, with a key set that holds every version on the page.
    pub from_row: fn(&Row, &KeySet) -> ApiResult<T>,
}

/// One page of the resource, as the request's `limit`, `cursor` and filter ask.
pub async fn list<T: Serialize>(
    client: &impl GenericClient,
    req: &Req,
    l: Listing<T>,
) -> ApiResult<Outcome> {
    let (rows, p) = rows(client, req, &l.select, l.alias, l.only, l.by_environment).await?;
    let items = rows
        .iter()
        .map(|r| Ok((r.get::<_, i64>(r.len() - 1), (l.from_row)(r)?)))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(reply(StatusCode::OK, &page(items, p), None).into())
}

/// Like [`list`], opening the sealed column of every row.
pub async fn list_sealed<T: Serialize>(
    client: &impl GenericClient,
    keys: &MasterKeys,
    req: &Req,
    l: SealedListing<T>,
) -> ApiResult<Outcome> {
    let (rows, p) = rows(client, req, &l.select, l.alias, None, l.by_environment).await?;
    let set = at_rest::keys_for(
        keys,
        rows.iter()
            .filter_map(|r| r.get::<_, Option<&str>>(l.sealed)),
    )
    .await?;
    let items = rows
        .iter()
        .map(|r| Ok((r.get::<_, i64>(r.len() - 1), (l.from_row)(r, &set)?)))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(reply(StatusCode::OK, &page(items, p), None).into())
}

async fn rows(
    client: &impl GenericClient,
    req: &Req,
    select: &str,
    a: &str,
    only: Option<&str>,
    by_environment: bool,
) -> ApiResult<(Vec<Row>, Paging)> {
    let p = paging(&req.query)?;
    let mut sql = format!("{select} where {a}.seq > $1");
    if let Some(only) = only {
        sql.push_str(&format!(" and {only}"));
    }
    let env = req
        .query
        .get("environment_id")
        .map(|s| parse_id("environment", s))
        .transpose()?;
    let limit = p.limit + 1;
    let rows = if by_environment {
        sql.push_str(&format!(
            " and ($3::uuid is null or {a}.environment_id = $3) order by {a}.seq limit $2"
        ));
        client.q(&sql, &[&p.after, &limit, &env]).await?
    } else {
        sql.push_str(&format!(" order by {a}.seq limit $2"));
        client.q(&sql, &[&p.after, &limit]).await?
    };
    Ok((rows, p))
}
