-- The job ledger: jobs, their append-only status history, and their output artifacts.
-- Valid status moves live in job_status_transitions; a trigger refuses any other move, so a writer that
-- bypasses kai_flows (another service, a hand-typed UPDATE) cannot corrupt a job's life cycle either.

CREATE TABLE job_status_transitions (
    from_status text NOT NULL,
    to_status   text NOT NULL,
    PRIMARY KEY (from_status, to_status)
);

INSERT INTO job_status_transitions (from_status, to_status) VALUES
    ('queued', 'submitted'),
    ('queued', 'cancelled'),
    ('submitted', 'running'),
    ('submitted', 'succeeded'),
    ('submitted', 'failed'),
    ('submitted', 'cancelled'),
    ('running', 'succeeded'),
    ('running', 'failed'),
    ('running', 'cancelled'),
    ('failed', 'queued');

CREATE TABLE jobs (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pipeline         text NOT NULL CHECK (pipeline <> ''),
    parameters       jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(parameters) = 'object'),
    tier             text NOT NULL,
    queue_class      text NOT NULL,
    priority         integer NOT NULL DEFAULT 0,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'submitted', 'running', 'succeeded', 'failed', 'cancelled')),
    input_uri        text,
    output_uri       text,
    workflow_name    text,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    error            text,
    -- Which coordinator owns the job while it is in flight, and until when (a lease it renews).
    claimed_by       text,
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    submitted_at     timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz
);

-- The queue query as the deployment guide's queue collections index it: status, priority desc, created_at.
CREATE INDEX jobs_queue_idx ON jobs (status, priority DESC, created_at);
-- What admission actually reads: the head of one class's waiting line ...
CREATE INDEX jobs_waiting_by_class_idx ON jobs (queue_class, priority DESC, created_at, id) WHERE status = 'queued';
-- ... and each class's in-flight count (the concurrency cap).
CREATE INDEX jobs_in_flight_idx ON jobs (queue_class) WHERE status IN ('submitted', 'running');
-- One workflow belongs to one job.
CREATE UNIQUE INDEX jobs_workflow_name_key ON jobs (workflow_name) WHERE workflow_name IS NOT NULL;

CREATE FUNCTION jobs_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT EXISTS (
        SELECT 1 FROM job_status_transitions t WHERE t.from_status = OLD.status AND t.to_status = NEW.status
    ) THEN
        RAISE EXCEPTION 'job %: invalid status transition % -> %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER jobs_check_transition BEFORE UPDATE OF status ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_check_transition();

CREATE TABLE job_status_history (
    id            bigserial PRIMARY KEY,
    job_id        uuid NOT NULL REFERENCES jobs (id),
    from_status   text,
    to_status     text NOT NULL,
    attempt       integer NOT NULL,
    workflow_name text,
    actor         text,
    detail        text,
    at            timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX job_status_history_job_idx ON job_status_history (job_id, id);

CREATE FUNCTION job_status_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'job_status_history is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER job_status_history_append_only BEFORE UPDATE OR DELETE ON job_status_history
    FOR EACH ROW EXECUTE FUNCTION job_status_history_append_only();
CREATE TRIGGER job_status_history_no_truncate BEFORE TRUNCATE ON job_status_history
    FOR EACH STATEMENT EXECUTE FUNCTION job_status_history_append_only();

CREATE TABLE job_outputs (
    job_id     uuid NOT NULL REFERENCES jobs (id),
    attempt    integer NOT NULL,
    uri        text NOT NULL CHECK (uri <> ''),
    sha256     text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size       bigint NOT NULL CHECK (size >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt, uri)
);
