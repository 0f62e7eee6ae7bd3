//! Capturing schema changes on the source: event triggers that write a logical message
//! into the WAL inside the DDL's own transaction, so the change stream sees each DDL in
//! order with the data around it, and can tell a rename from a drop plus an add.

use culvert_connector_sdk::host::Level;
use culvert_pg_guest::{ErrorKind, GuestResult, PgConnectConfig, pg_error};
use serde::Deserialize;
use tokio_postgres::Client;

use crate::catalog::StreamColumn;
use crate::log;

/// Prefix of the logical messages the triggers write.
pub const DDL_PREFIX: &str = "culvert.ddl";

/// Bumped whenever the installed SQL changes, so an older install is replaced.
const VERSION: i32 = 3;

const INSTALL_SQL: &str = r#"
CREATE SCHEMA IF NOT EXISTS _culvert;
CREATE TABLE IF NOT EXISTS _culvert.ddl_columns (
    relid oid NOT NULL,
    attnum int2 NOT NULL,
    attname name NOT NULL,
    atttypid oid NOT NULL,
    atttypmod int4 NOT NULL,
    PRIMARY KEY (relid, attnum)
);
ALTER TABLE _culvert.ddl_columns ADD COLUMN IF NOT EXISTS nspname name;
ALTER TABLE _culvert.ddl_columns ADD COLUMN IF NOT EXISTS relname name;
CREATE TABLE IF NOT EXISTS _culvert.ddl_capture (version int4 NOT NULL);

CREATE OR REPLACE FUNCTION _culvert.ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET extra_float_digits = 3
AS $fn$
DECLARE
    r record;
    msg jsonb;
BEGIN
    FOR r IN
        SELECT DISTINCT c.oid AS relid, n.nspname, c.relname
          FROM pg_event_trigger_ddl_commands() e
          JOIN pg_class c ON c.oid = e.objid AND e.classid = 'pg_catalog.pg_class'::regclass
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_culvert')
           AND n.nspname NOT LIKE 'pg\_%'
    LOOP
        msg := jsonb_build_object(
            'relid', r.relid::int8,
            'namespace', r.nspname,
            'name', r.relname,
            'created', NOT EXISTS (SELECT 1 FROM _culvert.ddl_columns s WHERE s.relid = r.relid),
            -- The table's name before this DDL, when the DDL renamed or moved it.
            'previous', (SELECT jsonb_build_array(s.nspname, s.relname) FROM _culvert.ddl_columns s
                          WHERE s.relid = r.relid AND s.relname IS NOT NULL
                            AND (s.nspname, s.relname) IS DISTINCT FROM (r.nspname, r.relname)
                          LIMIT 1),
            'columns', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                'name', a.attname, 'type', a.atttypid::int8, 'typmod', a.atttypmod)
                                ORDER BY a.attnum), '[]'::jsonb)
                          FROM pg_attribute a
                         WHERE a.attrelid = r.relid AND a.attnum > 0 AND NOT a.attisdropped
                           AND a.attgenerated = ''),
            'renames', (SELECT coalesce(jsonb_agg(jsonb_build_array(s.attname, a.attname)), '[]'::jsonb)
                          FROM _culvert.ddl_columns s
                          JOIN pg_attribute a ON a.attrelid = s.relid AND a.attnum = s.attnum
                         WHERE s.relid = r.relid AND NOT a.attisdropped AND s.attname <> a.attname),
            -- Existing rows of a column added with a constant default hold that value.
            'defaults', (SELECT coalesce(jsonb_object_agg(a.attname, array_to_string(a.attmissingval, '')), '{}'::jsonb)
                           FROM pg_attribute a
                          WHERE a.attrelid = r.relid AND a.attnum > 0 AND NOT a.attisdropped
                            AND a.atthasmissing
                            AND NOT EXISTS (SELECT 1 FROM _culvert.ddl_columns s
                                             WHERE s.relid = r.relid AND s.attnum = a.attnum)),
            -- Rows rewritten with values the stream never carries: a volatile default on a
            -- new column, or a type change computed by a USING expression.
            'rewrite', EXISTS (SELECT 1 FROM pg_attribute a
                                 JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                                WHERE a.attrelid = r.relid AND a.attnum > 0 AND NOT a.attisdropped
                                  AND NOT a.atthasmissing AND a.attgenerated = ''
                                  AND EXISTS (SELECT 1 FROM _culvert.ddl_columns s WHERE s.relid = r.relid)
                                  AND NOT EXISTS (SELECT 1 FROM _culvert.ddl_columns s
                                                   WHERE s.relid = r.relid AND s.attnum = a.attnum))
                    OR (current_query() ~* '\musing\M'
                        AND EXISTS (SELECT 1 FROM _culvert.ddl_columns s
                                      JOIN pg_attribute a ON a.attrelid = s.relid AND a.attnum = s.attnum
                                     WHERE s.relid = r.relid AND NOT a.attisdropped
                                       AND (s.atttypid, s.atttypmod) IS DISTINCT FROM (a.atttypid, a.atttypmod)))
        );
        DELETE FROM _culvert.ddl_columns WHERE relid = r.relid;
        INSERT INTO _culvert.ddl_columns
             SELECT a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, r.nspname, r.relname
               FROM pg_attribute a
              WHERE a.attrelid = r.relid AND a.attnum > 0 AND NOT a.attisdropped;
        PERFORM pg_logical_emit_message(true, 'culvert.ddl', msg::text);
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION _culvert.ddl_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT objid, schema_name, object_name FROM pg_event_trigger_dropped_objects()
         WHERE object_type = 'table' AND schema_name NOT IN ('pg_catalog', 'information_schema', '_culvert')
    LOOP
        DELETE FROM _culvert.ddl_columns WHERE relid = r.objid;
        PERFORM pg_logical_emit_message(true, 'culvert.ddl', jsonb_build_object(
            'relid', r.objid::int8, 'namespace', r.schema_name, 'name', r.object_name, 'dropped', true)::text);
    END LOOP;
END
$fn$;

INSERT INTO _culvert.ddl_columns
     SELECT a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, n.nspname, c.relname
       FROM pg_attribute a
       JOIN pg_class c ON c.oid = a.attrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ON CONFLICT (relid, attnum) DO UPDATE SET nspname = EXCLUDED.nspname, relname = EXCLUDED.relname
  WHERE _culvert.ddl_columns.relname IS NULL;
"#;

const TRIGGERS_SQL: &str = "
DROP EVENT TRIGGER IF EXISTS culvert_ddl_end;
DROP EVENT TRIGGER IF EXISTS culvert_ddl_drop;
CREATE EVENT TRIGGER culvert_ddl_end ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE TABLE AS', 'SELECT INTO')
    EXECUTE FUNCTION _culvert.ddl_end();
CREATE EVENT TRIGGER culvert_ddl_drop ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA')
    EXECUTE FUNCTION _culvert.ddl_drop();
";

/// What a captured DDL did to one table.
#[derive(Debug, Clone, Deserialize)]
pub struct DdlEvent {
    /// Table OID.
    pub relid: u32,
    /// Schema name.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// The table was dropped.
    #[serde(default)]
    pub dropped: bool,
    /// Columns after the DDL, in table order.
    #[serde(default)]
    pub columns: Vec<StreamColumn>,
    /// The table's `[schema, name]` before this DDL renamed or moved it.
    #[serde(default)]
    pub previous: Option<(String, String)>,
    /// Renamed columns: `[old, new]`.
    #[serde(default)]
    pub renames: Vec<(String, String)>,
    /// Columns added with a constant default: the value existing rows hold, as text.
    #[serde(default)]
    pub defaults: std::collections::BTreeMap<String, String>,
    /// Existing rows were rewritten with values the stream does not carry.
    #[serde(default)]
    pub rewrite: bool,
}

/// Parse a captured DDL message.
pub fn parse(content: &[u8]) -> Result<DdlEvent, serde_json::Error> {
    serde_json::from_slice(content)
}

/// Install (or upgrade) the capture. Without the privilege to create event triggers
/// (superuser) schema changes still follow, but renames look like a drop plus an add.
pub async fn install(client: &Client, cfg: &PgConnectConfig) -> GuestResult<bool> {
    let installed: Option<i32> = client
        .query_opt(
            "SELECT (SELECT max(version) FROM _culvert.ddl_capture)
               FROM pg_catalog.pg_event_trigger WHERE evtname = 'culvert_ddl_end'
                AND to_regclass('_culvert.ddl_capture') IS NOT NULL",
            &[],
        )
        .await
        .ok()
        .flatten()
        .and_then(|r| r.get(0));
    if installed == Some(VERSION) {
        return Ok(true);
    }
    let result = async {
        client.batch_execute("BEGIN").await?;
        client.batch_execute(INSTALL_SQL).await?;
        client.batch_execute(TRIGGERS_SQL).await?;
        client
            .batch_execute(&format!(
                "DELETE FROM _culvert.ddl_capture; INSERT INTO _culvert.ddl_capture VALUES ({VERSION})"
            ))
            .await?;
        client.batch_execute("COMMIT").await
    }
    .await;
    match result {
        Ok(()) => {
            log(
                Level::Info,
                "installed schema change capture (event triggers culvert_ddl_end, culvert_ddl_drop)",
            );
            Ok(true)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            let err = pg_error(cfg, "install schema change capture", &e);
            if err.kind != ErrorKind::Permission {
                return Err(err);
            }
            log(
                Level::Warn,
                &format!(
                    "{}; schema changes still replicate, but a renamed column arrives as a new column and the table is copied again. Let a superuser run the agent once, or grant it, to capture renames",
                    err.message
                ),
            );
            Ok(false)
        }
    }
}
