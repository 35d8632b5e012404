-- PostgreSQL only (its full-text word statistics); SQLite counts words in
-- its FTS5 index. Kept so that both dialects number their migrations alike.
SELECT 1;
