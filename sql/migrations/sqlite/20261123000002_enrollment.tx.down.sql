DROP TABLE revoked_certificates;
--bun:split
DROP TABLE enrollment_tokens;
