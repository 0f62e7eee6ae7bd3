//! Versioned migrations, applied in order on start in one transaction under an advisory lock.

use tokio_postgres::Client;

use super::StoreError;

/// Every migration: version, file name, SQL. Append only; never edit a released one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_control_store.sql",
        include_str!("../../migrations/0001_control_store.sql"),
    ),
    (
        2,
        "0002_sealed_configuration.sql",
        include_str!("../../migrations/0002_sealed_configuration.sql"),
    ),
    (
        3,
        "0003_connector_registry.sql",
        include_str!("../../migrations/0003_connector_registry.sql"),
    ),
    (
        4,
        "0004_byoc.sql",
        include_str!("../../migrations/0004_byoc.sql"),
    ),
];

/// Serializes concurrent starts: every instance takes this advisory lock while migrating.
const LOCK_KEY: i64 = 0x6375_6c76_6572_7401;

/// Apply what is missing; returns the versions applied now.
pub async fn apply(client: &mut Client) -> Result<Vec<i32>, StoreError> {
    let fail = |version, name, source| StoreError::Migration {
        version,
        name,
        source,
    };
    client
        .batch_execute(
            "create table if not exists schema_migrations (
                 version integer primary key,
                 name text not null,
                 applied_at timestamptz not null default now())",
        )
        .await
        .map_err(|e| fail(0, "schema_migrations", e))?;
    let mut applied = Vec::new();
    let tx = client.transaction().await.map_err(|e| fail(0, "lock", e))?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| fail(0, "lock", e))?;
    let done: Vec<i32> = tx
        .query("select version from schema_migrations", &[])
        .await
        .map_err(|e| fail(0, "schema_migrations", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for &(version, name, sql) in MIGRATIONS {
        if done.contains(&version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| fail(version, name, e))?;
        tx.execute(
            "insert into schema_migrations (version, name) values ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(|e| fail(version, name, e))?;
        applied.push(version);
    }
    tx.commit().await.map_err(|e| fail(0, "commit", e))?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn versions_increase_and_match_file_names() {
        for (i, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, i + 1);
            assert!(name.starts_with(&format!("{version:04}_")), "{name}");
        }
    }
}
