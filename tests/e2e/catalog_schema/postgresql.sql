-- The catalog's schema as archiver/catalog.py created it (Base.metadata.create_all) before
-- migrations existed, on postgresql: frozen here so the migration tests start from it.

CREATE TABLE chain_head (
	id SERIAL NOT NULL, 
	seq BIGINT NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	checkpoint VARCHAR(64) NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE cursors (
	name VARCHAR(64) NOT NULL, 
	value BIGINT NOT NULL, 
	PRIMARY KEY (name)
);

CREATE TABLE data_keys (
	id VARCHAR(96) NOT NULL, 
	wrapped BYTEA, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	destroyed_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id)
);

CREATE TABLE duplicate_hits (
	id BIGSERIAL NOT NULL, 
	record_seq BIGINT NOT NULL, 
	delivery_seq BIGINT NOT NULL, 
	kind VARCHAR(24) NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_duplicate_hits_record_seq ON duplicate_hits (record_seq);

CREATE TABLE journal (
	id BIGSERIAL NOT NULL, 
	source VARCHAR(24) NOT NULL, 
	received_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	body BYTEA, 
	body_sha256 VARCHAR(64) NOT NULL, 
	meta JSON NOT NULL, 
	sealed BOOLEAN NOT NULL, 
	delivery_seq BIGINT, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_journal_unsealed ON journal (sealed, id);

CREATE TABLE media (
	id BIGSERIAL NOT NULL, 
	record_seq BIGINT NOT NULL, 
	media_id VARCHAR(128) NOT NULL, 
	expected_sha256 VARCHAR(128), 
	mime_type VARCHAR(128), 
	key_id VARCHAR(96) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_attempt_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	last_error VARCHAR(255), 
	object_key VARCHAR(255), 
	sha256 VARCHAR(64), 
	size BIGINT, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_media_due ON media (state, next_attempt_at);

CREATE INDEX ix_media_record_seq ON media (record_seq);

CREATE TABLE message_state (
	wamid VARCHAR(255) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	status_seq BIGINT NOT NULL, 
	PRIMARY KEY (wamid)
);

CREATE TABLE pending_links (
	id BIGSERIAL NOT NULL, 
	target_key VARCHAR(64) NOT NULL, 
	record_seq BIGINT NOT NULL, 
	kind VARCHAR(24) NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_pending_links_target_key ON pending_links (target_key);

CREATE TABLE segments (
	id BIGSERIAL NOT NULL, 
	key VARCHAR(255) NOT NULL, 
	retention_class VARCHAR(64) NOT NULL, 
	first_seq BIGINT NOT NULL, 
	last_seq BIGINT NOT NULL, 
	records INTEGER NOT NULL, 
	merkle_root VARCHAR(64) NOT NULL, 
	last_hash VARCHAR(64) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	size BIGINT NOT NULL, 
	retain_until TIMESTAMP WITH TIME ZONE NOT NULL, 
	checkpoint_key VARCHAR(255) NOT NULL, 
	checkpoint_digest VARCHAR(64) NOT NULL, 
	state VARCHAR(8) NOT NULL, 
	blob BYTEA, 
	checkpoint_blob BYTEA, 
	sealed_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (key)
);

CREATE INDEX ix_segments_first_seq ON segments (first_seq);

CREATE INDEX ix_segments_state ON segments (state);

CREATE TABLE tokens (
	id SERIAL NOT NULL, 
	name VARCHAR(128) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	token_hash VARCHAR(64) NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	revoked_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	UNIQUE (token_hash)
);

CREATE TABLE records (
	seq BIGINT NOT NULL, 
	kind VARCHAR(24) NOT NULL, 
	type VARCHAR(64), 
	item_key VARCHAR(64), 
	wamid VARCHAR(255), 
	contact VARCHAR(128), 
	delivery_seq BIGINT, 
	segment_id BIGINT NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	retention_class VARCHAR(64) NOT NULL, 
	retain_until TIMESTAMP WITH TIME ZONE NOT NULL, 
	key_id VARCHAR(96) NOT NULL, 
	occurred_at BIGINT, 
	links JSON NOT NULL, 
	PRIMARY KEY (seq), 
	UNIQUE (item_key), 
	FOREIGN KEY(segment_id) REFERENCES segments (id)
);

CREATE INDEX ix_records_contact ON records (contact);

CREATE INDEX ix_records_kind ON records (kind);

CREATE INDEX ix_records_wamid ON records (wamid);
