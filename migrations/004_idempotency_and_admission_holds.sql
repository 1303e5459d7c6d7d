-- The coordinator's HTTP API and its back-pressure (kai_flows/service).
-- idempotency_key: a client-chosen key; a retried submission with the same key (per tenant) returns the job the
-- first one created instead of a second job. request_sha256: the canonical request the key was first used with,
-- so the same key with a different request is refused instead of silently answered with the other job.
ALTER TABLE jobs ADD COLUMN idempotency_key text CHECK (idempotency_key <> '' AND length(idempotency_key) <= 255);
ALTER TABLE jobs ADD COLUMN request_sha256 text CHECK (request_sha256 ~ '^[0-9a-f]{64}$');
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- A job cancelled while in flight still has a workflow to stop. Its owner stops it; if the owner is dead, the
-- coordinator that adopts the job does (claim.py adopt). True until a coordinator has stopped the workflow.
ALTER TABLE jobs ADD COLUMN stop_workflow boolean NOT NULL DEFAULT false;
CREATE INDEX jobs_stop_workflow_idx ON jobs (id) WHERE stop_workflow;

-- Admission held per queue class: its workflows' pods cannot be scheduled, or the backend refused a submission.
-- Kept in the ledger so every coordinator replica admits by the same holds and reports the same reason. Each
-- replica keeps its own rows (it sees only the workflows it follows) and renews them while the cause lasts; a
-- replica that dies leaves rows that lapse at `until`.
CREATE TABLE admission_holds (
    queue_class text NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('unschedulable', 'backend_refused')),
    detail      text NOT NULL,
    held_by     text NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    until       timestamptz NOT NULL,
    PRIMARY KEY (queue_class, reason, held_by)
);
