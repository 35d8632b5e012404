-- Full-text retrieval chooses the query's rarest words by the word
-- frequencies ANALYZE keeps for the tsv column (src/memory/db.rs,
-- terms_within). The default target keeps 1,000 words, the least of them
-- in about 12% of chunks at 100k: too coarse to tell a rare word from a
-- common one. 1,000 keeps 10,000 words (ANALYZE reads a larger sample).
ALTER TABLE memory_chunks ALTER COLUMN tsv SET STATISTICS 1000;
