-- The platform user whose next message a run waiting for input takes: the
-- person who pressed Edit or Reject. NULL: any allowed user (runs that
-- were waiting before this column existed).
ALTER TABLE runs ADD COLUMN input_from TEXT;
