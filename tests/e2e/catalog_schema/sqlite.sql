-- The catalog's schema as archiver/catalog.py created it (Base.metadata.create_all) before
-- migrations existed, on sqlite: frozen here so the migration tests start from it.

CREATE TABLE chain_head (
	id INTEGER NOT NULL, 
	seq INTEGER NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	checkpoint VARCHAR(64) NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE cursors (
	name VARCHAR(64) NOT NULL, 
	value INTEGER NOT NULL, 
	PRIMARY KEY (name)
);

CREATE TABLE data_keys (
	id VARCHAR(96) NOT NULL, 
	wrapped BLOB, 
	created_at DATETIME NOT NULL, 
	destroyed_at DATETIME, 
	PRIMARY KEY (id)
);

CREATE TABLE duplicate_hits (
	id INTEGER NOT NULL, 
	record_seq INTEGER NOT NULL, 
	delivery_seq INTEGER NOT NULL, 
	kind VARCHAR(24) NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_duplicate_hits_record_seq ON duplicate_hits (record_seq);

CREATE TABLE journal (
	id INTEGER NOT NULL, 
	source VARCHAR(24) NOT NULL, 
	received_at DATETIME NOT NULL, 
	body BLOB, 
	body_sha256 VARCHAR(64) NOT NULL, 
	meta JSON NOT NULL, 
	sealed BOOLEAN NOT NULL, 
	delivery_seq INTEGER, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_journal_unsealed ON journal (sealed, id);

CREATE TABLE media (
	id INTEGER NOT NULL, 
	record_seq INTEGER NOT NULL, 
	media_id VARCHAR(128) NOT NULL, 
	expected_sha256 VARCHAR(128), 
	mime_type VARCHAR(128), 
	key_id VARCHAR(96) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_attempt_at DATETIME NOT NULL, 
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
	status_seq INTEGER NOT NULL, 
	PRIMARY KEY (wamid)
);

CREATE TABLE pending_links (
	id INTEGER NOT NULL, 
	target_key VARCHAR(64) NOT NULL, 
	record_seq INTEGER NOT NULL, 
	kind VARCHAR(24) NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_pending_links_target_key ON pending_links (target_key);

CREATE TABLE segments (
	id INTEGER NOT NULL, 
	"key" VARCHAR(255) NOT NULL, 
	retention_class VARCHAR(64) NOT NULL, 
	first_seq INTEGER NOT NULL, 
	last_seq INTEGER NOT NULL, 
	records INTEGER NOT NULL, 
	merkle_root VARCHAR(64) NOT NULL, 
	last_hash VARCHAR(64) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	size BIGINT NOT NULL, 
	retain_until DATETIME NOT NULL, 
	checkpoint_key VARCHAR(255) NOT NULL, 
	checkpoint_digest VARCHAR(64) NOT NULL, 
	state VARCHAR(8) NOT NULL, 
	blob BLOB, 
	checkpoint_blob BLOB, 
	sealed_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE ("key")
);

CREATE INDEX ix_segments_first_seq ON segments (first_seq);

CREATE INDEX ix_segments_state ON segments (state);

CREATE TABLE tokens (
	id INTEGER NOT NULL, 
	name VARCHAR(128) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	token_hash VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	revoked_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (token_hash)
);

CREATE TABLE records (
	seq INTEGER NOT NULL, 
	kind VARCHAR(24) NOT NULL, 
	type VARCHAR(64), 
	item_key VARCHAR(64), 
	wamid VARCHAR(255), 
	contact VARCHAR(128), 
	delivery_seq INTEGER, 
	segment_id INTEGER NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	retention_class VARCHAR(64) NOT NULL, 
	retain_until DATETIME NOT NULL, 
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
