-- GIN's fast update puts new entries in a pending list that every search
-- reads whole until VACUUM (or autovacuum's analyze) merges it into the
-- index. After an ingest that list is up to 4 MB: measured at 100k
-- chunks, about 500 pages and 1.7 ms of each full-text query until
-- autovacuum came by. Entries now go straight into the index: an insert
-- costs a little more, a search never reads a backlog.
ALTER INDEX memory_chunks_tsv SET (fastupdate = off);
SELECT gin_clean_pending_list('memory_chunks_tsv');
