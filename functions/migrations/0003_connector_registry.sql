-- The connector registry: components by SHA-256 digest, connector types with immutable
-- versions that pin a component, the keys publishers sign versions with, and the version a
-- connector runs.

create table components (
    digest text primary key check (digest ~ '^[0-9a-f]{64}$'),
    bytes bytea not null,
    size bigint not null,
    kind text not null check (kind in ('source', 'target')),
    created_at timestamptz not null default now()
);

create table connector_types (
    name text primary key,
    seq bigserial unique,
    kind text not null check (kind in ('source', 'target')),
    created_at timestamptz not null default now()
);

create table connector_type_versions (
    type_name text not null references connector_types(name),
    version text not null,
    seq bigserial unique,
    digest text not null references components(digest),
    spec jsonb not null,
    egress text[] not null default '{}',
    limits jsonb,
    description text,
    -- The key whose signature was verified at publication, and the signature itself.
    signed_by text,
    signature text,
    created_at timestamptz not null default now(),
    primary key (type_name, version)
);

create table signing_keys (
    key_id text primary key,
    seq bigserial unique,
    public_key bytea not null check (length(public_key) = 32),
    created_at timestamptz not null default now()
);

-- A connector of a registered type runs one pinned version; first-party types leave these null.
alter table connectors add column type_version text;
alter table connectors add column component_digest text references components(digest);
alter table connectors add constraint connectors_type_version_fk
    foreign key (connector_type, type_version) references connector_type_versions(type_name, version);
