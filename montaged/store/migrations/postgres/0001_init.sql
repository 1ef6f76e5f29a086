-- Montage job store, PostgreSQL. Times are Unix seconds (double precision); JSON is jsonb.
-- Runs with search_path set to the store's schema, so names are unqualified.

CREATE TABLE jobs (
    id            text PRIMARY KEY,
    spec          jsonb NOT NULL,
    profile       text NOT NULL,               -- copied out of spec for find_by_hash
    state         text NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    stage         text,
    progress      double precision NOT NULL DEFAULT 0,
    created_at    double precision NOT NULL,
    updated_at    double precision NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    content_hash  text,
    error_class   text,
    error_message text,
    error_stage   text,
    stopped_at    text,
    result        jsonb NOT NULL DEFAULT '{}',
    worker        text,
    lease_until   double precision             -- database clock; a running job past it is taken over
);
-- claim() scans only queued and running rows, oldest first
CREATE INDEX jobs_claimable ON jobs (created_at) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_created ON jobs (created_at);
CREATE INDEX jobs_hash ON jobs (content_hash, profile);

CREATE TABLE stage_results (
    stage      text NOT NULL,
    key        text NOT NULL,
    payload    jsonb NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (stage, key)
);

CREATE TABLE job_events (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind   text NOT NULL,
    at     double precision NOT NULL,
    data   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE TABLE cost_ledger (
    id         text PRIMARY KEY,
    job_id     text NOT NULL,
    engine     text NOT NULL,
    amount     double precision NOT NULL CHECK (amount >= 0),
    actual     double precision CHECK (actual >= 0),
    state      text NOT NULL CHECK (state IN ('reserved', 'settled', 'released')),
    created_at double precision NOT NULL,
    settled_at double precision,
    day        text NOT NULL,                  -- 'YYYY-MM-DD' in UTC
    month      text NOT NULL                   -- 'YYYY-MM' in UTC
);
CREATE INDEX cost_ledger_job ON cost_ledger (job_id);
CREATE INDEX cost_ledger_day ON cost_ledger (day);
CREATE INDEX cost_ledger_month ON cost_ledger (month);
