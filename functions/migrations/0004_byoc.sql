-- Bring-your-own-cloud environments on Azure: what registration found through ARM, the
-- agents' scale set, per-connector network settings and VNet peerings.

-- A random value the bootstrap bundle carries into tags and the private endpoint's request
-- message, so registration approves only this environment's endpoint.
alter table environments add column external_id text;
-- What registration found (identity ids, private endpoint, role assignment), as JSON.
alter table environments add column azure_found jsonb;
-- The scale set: 'none', 'running', 'deallocated'; and the agent version it runs.
alter table environments add column compute_state text not null default 'none'
    check (compute_state in ('none', 'running', 'deallocated'));
alter table environments add column agent_version text;

-- Where a connector's database sits, for its network steps: the database's NSG and subnet.
alter table connectors add column network jsonb;

create table network_connections (
    id uuid primary key,
    seq bigserial unique,
    environment_id uuid not null references environments(id),
    name text not null,
    peer_subscription_id text not null,
    peer_tenant_id text not null,
    peer_resource_group text not null,
    peer_vnet text not null,
    peer_app_id text not null,
    state text not null check (state in ('APPROVED', 'PENDING_PEER', 'ACTIVE', 'INVALID_SPECIFICATION', 'REJECTED_BY_PEER', 'DELETING')),
    reason text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    version bigint not null default 1,
    unique (environment_id, name)
);

-- Hash of the one-time token a validation container presents (Azure environments).
alter table validations add column runner_token_hash bytea;

-- The registration token of an Azure environment's scale set, sealed with the master key:
-- every model update carries the same token, so instances created from an earlier model
-- still register.
alter table environments add column agent_token_sealed text;
