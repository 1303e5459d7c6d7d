-- Tenants sharing a bucket: every job belongs to one, and reads only that tenant's uploads
-- (kai_flows/tenancy.py). Jobs queued before this migration belong to the default tenant.
ALTER TABLE jobs ADD COLUMN tenant text NOT NULL DEFAULT 'default'
    CHECK (tenant ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$');
