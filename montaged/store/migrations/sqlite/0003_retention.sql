-- Retention: a stage result remembers the media it was computed for (NULL: written outside a
-- claim, e.g. the transcript cache), so pruning keeps what a queued or running job still needs.
ALTER TABLE stage_results ADD COLUMN content_hash TEXT;
CREATE INDEX stage_results_created ON stage_results (created_at);
CREATE INDEX jobs_state_updated ON jobs (state, updated_at);
CREATE INDEX job_events_at ON job_events (at);
