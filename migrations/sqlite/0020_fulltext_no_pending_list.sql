-- PostgreSQL only (its GIN index's pending list); kept so that both
-- dialects number their migrations alike.
SELECT 1;
