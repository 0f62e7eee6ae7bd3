-- The control store: every resource of the API, agents, leases and queued work.

create table api_keys (
    id uuid primary key,
    seq bigserial unique,
    name text not null,
    role text not null,
    prefix text not null,
    secret_hash bytea not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    revoked_at timestamptz
);

create table environments (
    id uuid primary key,
    seq bigserial unique,
    name text not null unique,
    provider text not null check (provider in ('azure', 'local')),
    azure jsonb,
    agents integer not null check (agents between 1 and 32),
    state text not null,
    reason text,
    -- Hash of the token agents present to register; the token itself goes to compute only.
    agent_token_hash bytea,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    version bigint not null default 1
);

create table connectors (
    id uuid primary key,
    seq bigserial unique,
    environment_id uuid not null references environments(id),
    name text not null,
    connector_type text not null,
    kind text not null check (kind in ('source', 'target')),
    config jsonb not null,
    secret_names text[] not null default '{}',
    -- Secret fields sealed for the environment's agents; never returned.
    sealed_secrets text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    version bigint not null default 1,
    unique (environment_id, name)
);

create table validations (
    id uuid primary key,
    connector_id uuid not null references connectors(id) on delete cascade,
    connector_version bigint not null,
    state text not null,
    checks jsonb not null default '[]',
    agent_id uuid,
    requested_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz
);
create index validations_by_connector on validations (connector_id, requested_at desc);

create table pipelines (
    id uuid primary key,
    seq bigserial unique,
    name text not null unique,
    environment_id uuid not null references environments(id),
    source_id uuid not null references connectors(id),
    target_id uuid not null references connectors(id),
    tables jsonb not null,
    batch_rows integer not null,
    state text not null check (state in ('draft', 'running', 'paused')),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    version bigint not null default 1,
    -- Fencing epoch: raised every time the pipeline's lease moves to an agent.
    epoch bigint not null default 0
);

create table agents (
    id uuid primary key,
    seq bigserial unique,
    environment_id uuid not null references environments(id) on delete cascade,
    name text not null,
    version text not null,
    key_hash bytea not null,
    healthy boolean not null default true,
    registered_at timestamptz not null default now(),
    last_heartbeat_at timestamptz not null default now()
);

-- One row per leased pipeline: one agent at a time, by construction (primary key).
create table leases (
    pipeline_id uuid primary key references pipelines(id) on delete cascade,
    agent_id uuid not null references agents(id) on delete cascade,
    epoch bigint not null,
    expires_at timestamptz not null,
    -- Set to move the pipeline: the holder stops, then the lease is released.
    revoked boolean not null default false
);

create table pipeline_status (
    pipeline_id uuid primary key references pipelines(id) on delete cascade,
    agent_id uuid,
    epoch bigint not null,
    progress jsonb not null,
    reported_at timestamptz not null default now()
);

create table pipeline_commands (
    id uuid primary key,
    pipeline_id uuid not null references pipelines(id) on delete cascade,
    kind text not null,
    tables jsonb not null,
    created_at timestamptz not null default now(),
    done_at timestamptz
);

create table idempotency_keys (
    principal text not null,
    key text not null,
    request_hash bytea not null,
    status integer not null,
    body jsonb not null,
    created_at timestamptz not null default now(),
    primary key (principal, key)
);
