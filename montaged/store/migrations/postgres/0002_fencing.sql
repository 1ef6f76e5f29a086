-- Fencing, poison jobs and reservations owned by a claim.
-- A claim's fencing token is jobs.attempts (it only ever grows). strikes counts the claims in a row
-- that ended without their holder finishing, failing or releasing the job (a crash, a lost lease)
-- and got no further than peak, the furthest stage (its index) such a claim reached.

ALTER TABLE jobs ADD COLUMN strikes integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN peak integer NOT NULL DEFAULT -1;

-- The claim a reservation was made under (NULL: made outside any claim, by a tool) and when a
-- sweeper released it because that claim was gone (a late settle from its holder still counts).
ALTER TABLE cost_ledger ADD COLUMN token integer;
ALTER TABLE cost_ledger ADD COLUMN swept_at double precision;
CREATE INDEX cost_ledger_open ON cost_ledger (job_id) WHERE state = 'reserved';
