-- Montage job store, SQLite. Times are Unix seconds (REAL); JSON columns hold text.

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    spec          TEXT NOT NULL,               -- JobSpec as JSON
    profile       TEXT NOT NULL,               -- copied out of spec for find_by_hash
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    stage         TEXT,
    progress      REAL NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    content_hash  TEXT,
    error_class   TEXT,
    error_message TEXT,
    error_stage   TEXT,
    stopped_at    TEXT,
    result        TEXT NOT NULL DEFAULT '{}',
    worker        TEXT,
    lease_until   REAL                         -- a running job past this is taken over
);
CREATE INDEX jobs_state_created ON jobs (state, created_at);
CREATE INDEX jobs_created ON jobs (created_at);
CREATE INDEX jobs_hash ON jobs (content_hash, profile);

CREATE TABLE stage_results (
    stage      TEXT NOT NULL,
    key        TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (stage, key)
);

CREATE TABLE job_events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind   TEXT NOT NULL,
    at     REAL NOT NULL,
    data   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE TABLE cost_ledger (
    id         TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL,
    engine     TEXT NOT NULL,
    amount     REAL NOT NULL CHECK (amount >= 0),
    actual     REAL CHECK (actual >= 0),
    state      TEXT NOT NULL CHECK (state IN ('reserved', 'settled', 'released')),
    created_at REAL NOT NULL,
    settled_at REAL,
    day        TEXT NOT NULL,                  -- 'YYYY-MM-DD' in UTC
    month      TEXT NOT NULL                   -- 'YYYY-MM' in UTC
);
CREATE INDEX cost_ledger_job ON cost_ledger (job_id);
CREATE INDEX cost_ledger_day ON cost_ledger (day);
CREATE INDEX cost_ledger_month ON cost_ledger (month);
