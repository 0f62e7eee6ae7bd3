-- Configuration a user gives is kept sealed (AES-256-GCM under the control plane's versioned
-- master key, functions/src/store/at_rest.rs): a connector's configuration, an environment's
-- Azure settings, and the stored replies of idempotent creates, which repeat them.
--
-- SQL cannot seal (the key is not in the database), so this only adds the sealed columns and
-- lets the plaintext ones go empty. On the first start after it, the handler seals every
-- plaintext row and drops the plaintext columns (store::at_rest::seal_plaintext).

alter table connectors add column config_sealed text;
alter table connectors alter column config drop not null;

alter table environments add column azure_sealed text;

alter table idempotency_keys add column body_sealed text;
alter table idempotency_keys alter column body drop not null;
