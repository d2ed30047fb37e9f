"""The tables as the queries see them; `migrations.py` is what creates them.

A test checks that a freshly migrated database has exactly these tables and columns, so
the two never drift apart.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, Table, Text

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("password_hash", Text),
    Column("is_admin", Boolean, nullable=False),
    Column("deactivated", Boolean, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("displayname", Text),
    Column("avatar_url", Text),
)

devices = Table(
    "devices",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("device_id", Text, primary_key=True),
    Column("display_name", Text),
    Column("created_ts", BigInteger, nullable=False),
    Column("last_seen_ts", BigInteger),
    Column("last_seen_ip", Text),
)

access_tokens = Table(
    "access_tokens",
    metadata,
    Column("token_hash", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("device_id", Text, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

registration_tokens = Table(
    "registration_tokens",
    metadata,
    Column("token", Text, primary_key=True),
    Column("uses_allowed", Integer),
    Column("pending", Integer, nullable=False),
    Column("completed", Integer, nullable=False),
    Column("expiry_time", BigInteger),
)

uia_sessions = Table(
    "uia_sessions",
    metadata,
    Column("session_id", Text, primary_key=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("user_id", Text),
    Column("completed", Text, nullable=False),
    Column("request_summary", Text, nullable=False),
)

# Media (migration 2)

media_content = Table(
    "media_content",
    metadata,
    Column("sha256", Text, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("image_status", Text),
    Column("image_width", Integer),
    Column("image_height", Integer),
)

local_media = Table(
    "local_media",
    metadata,
    Column("media_id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("unused_expires_at", BigInteger),
    Column("sha256", Text),
    Column("size", BigInteger),
    Column("content_type", Text),
    Column("upload_name", Text),
    Column("uploaded_ts", BigInteger),
)

media_thumbnails = Table(
    "media_thumbnails",
    metadata,
    Column("source_sha256", Text, primary_key=True),
    Column("width", Integer, primary_key=True),
    Column("height", Integer, primary_key=True),
    Column("method", Text, primary_key=True),
    Column("content_type", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("actual_width", Integer, nullable=False),
    Column("actual_height", Integer, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

# Rooms (migration 3)

rooms = Table(
    "rooms",
    metadata,
    Column("room_id", Text, primary_key=True),
    Column("room_version", Text, nullable=False),
    Column("creator", Text),
    Column("created_ts", BigInteger, nullable=False),
    Column("is_public", Boolean, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("stream_ordering", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False, unique=True),
    Column("room_id", Text, nullable=False),
    Column("depth", BigInteger, nullable=False),
    Column("type", Text, nullable=False),
    Column("state_key", Text),
    Column("sender", Text, nullable=False),
    Column("origin_server_ts", BigInteger, nullable=False),
    Column("outlier", Boolean, nullable=False),
    Column("rejected_reason", Text),
    Column("redacted_by", Text),
    Column("json", Text, nullable=False),
)

event_edges = Table(
    "event_edges",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("prev_event_id", Text, primary_key=True),
    sqlite_with_rowid=False,
)

event_auth = Table(
    "event_auth",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("auth_id", Text, primary_key=True),
    sqlite_with_rowid=False,
)

room_forward_extremities = Table(
    "room_forward_extremities",
    metadata,
    Column("room_id", Text, primary_key=True),
    Column("event_id", Text, primary_key=True),
    sqlite_with_rowid=False,
)

state_groups = Table(
    "state_groups",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("room_id", Text, nullable=False),
    Column("prev_group", BigInteger),
    Column("delta_depth", Integer, nullable=False),
)

state_group_entries = Table(
    "state_group_entries",
    metadata,
    Column("group_id", BigInteger, primary_key=True),
    Column("type", Text, primary_key=True),
    Column("state_key", Text, primary_key=True),
    Column("event_id", Text, nullable=False),
    sqlite_with_rowid=False,
)

event_to_state_group = Table(
    "event_to_state_group",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("state_group", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

current_state = Table(
    "current_state",
    metadata,
    Column("room_id", Text, primary_key=True),
    Column("type", Text, primary_key=True),
    Column("state_key", Text, primary_key=True),
    Column("event_id", Text, nullable=False),
    sqlite_with_rowid=False,
)

room_memberships = Table(
    "room_memberships",
    metadata,
    Column("room_id", Text, primary_key=True),
    Column("user_id", Text, primary_key=True),
    Column("membership", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("stream_ordering", BigInteger, nullable=False),
    Column("sender", Text, nullable=False),
    Column("forgotten", Boolean, nullable=False),
    sqlite_with_rowid=False,
)

event_txn_ids = Table(
    "event_txn_ids",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("device_id", Text, primary_key=True),
    Column("txn_id", Text, primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

event_relations = Table(
    "event_relations",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("room_id", Text, nullable=False),
    Column("relates_to_id", Text, nullable=False),
    Column("rel_type", Text, nullable=False),
    Column("stream_ordering", BigInteger, nullable=False),
)

room_aliases = Table(
    "room_aliases",
    metadata,
    Column("alias", Text, primary_key=True),
    Column("room_id", Text, nullable=False),
    Column("creator", Text, nullable=False),
)

account_data = Table(
    "account_data",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("room_id", Text, primary_key=True),
    Column("type", Text, primary_key=True),
    Column("content", Text, nullable=False),
    Column("stream_id", BigInteger, nullable=False),
)

event_reports = Table(
    "event_reports",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("room_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("reason", Text),
    Column("score", Integer),
    Column("received_ts", BigInteger, nullable=False),
)

# --- sync streams and E2EE keys (migration 4) ------------------------------------------

stream_positions = Table(
    "stream_positions",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("position", BigInteger, nullable=False),
)

user_filters = Table(
    "user_filters",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("filter_id", BigInteger, primary_key=True),
    Column("filter_json", Text, nullable=False),
)

receipts = Table(
    "receipts",
    metadata,
    Column("room_id", Text, primary_key=True),
    Column("receipt_type", Text, primary_key=True),
    Column("user_id", Text, primary_key=True),
    Column("thread_id", Text, primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("stream_id", BigInteger, nullable=False),
)

to_device_messages = Table(
    "to_device_messages",
    metadata,
    Column("stream_id", BigInteger, primary_key=True),
    Column("user_id", Text, primary_key=True),
    Column("device_id", Text, primary_key=True),
    Column("message", Text, nullable=False),
)

to_device_txns = Table(
    "to_device_txns",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("device_id", Text, primary_key=True),
    Column("txn_id", Text, primary_key=True),
    Column("created_ts", BigInteger, nullable=False),
)

presence = Table(
    "presence",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("state", Text, nullable=False),
    Column("status_msg", Text),
    Column("last_active_ts", BigInteger, nullable=False),
    Column("stream_id", BigInteger, nullable=False),
)

device_list_changes = Table(
    "device_list_changes",
    metadata,
    Column("stream_id", BigInteger, primary_key=True),
    Column("user_id", Text, primary_key=True),
)

e2e_device_keys = Table(
    "e2e_device_keys",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("device_id", Text, primary_key=True),
    Column("key_json", Text, nullable=False),
)

e2e_one_time_keys = Table(
    "e2e_one_time_keys",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("device_id", Text, primary_key=True),
    Column("algorithm", Text, primary_key=True),
    Column("key_id", Text, primary_key=True),
    Column("key_json", Text, nullable=False),
)

e2e_fallback_keys = Table(
    "e2e_fallback_keys",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("device_id", Text, primary_key=True),
    Column("algorithm", Text, primary_key=True),
    Column("key_id", Text, nullable=False),
    Column("key_json", Text, nullable=False),
    Column("used", Boolean, nullable=False),
)

e2e_cross_signing_keys = Table(
    "e2e_cross_signing_keys",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("key_type", Text, primary_key=True),
    Column("key_json", Text, nullable=False),
)

e2e_signatures = Table(
    "e2e_signatures",
    metadata,
    Column("signer_user_id", Text, primary_key=True),
    Column("signer_key_id", Text, primary_key=True),
    Column("target_user_id", Text, primary_key=True),
    Column("target_key_id", Text, primary_key=True),
    Column("signature", Text, nullable=False),
)

room_key_backup_versions = Table(
    "room_key_backup_versions",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("algorithm", Text, nullable=False),
    Column("auth_data", Text, nullable=False),
    Column("etag", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
)

room_key_backup_keys = Table(
    "room_key_backup_keys",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("room_id", Text, primary_key=True),
    Column("session_id", Text, primary_key=True),
    Column("first_message_index", BigInteger, nullable=False),
    Column("forwarded_count", BigInteger, nullable=False),
    Column("is_verified", Boolean, nullable=False),
    Column("session_data", Text, nullable=False),
)

# Operator (migration 6)

blocked_rooms = Table(
    "blocked_rooms",
    metadata,
    Column("room_id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("blocked_ts", BigInteger, nullable=False),
)

quarantined_media = Table(
    "quarantined_media",
    metadata,
    Column("server_name", Text, primary_key=True),
    Column("media_id", Text, primary_key=True),
    Column("quarantined_by", Text, nullable=False),
    Column("quarantined_ts", BigInteger, nullable=False),
)

# Federation (migration 7)

federation_outbox = Table(
    "federation_outbox",
    metadata,
    Column("destination", Text, primary_key=True),
    Column("event_id", Text, primary_key=True),
    Column("stream_ordering", BigInteger, nullable=False),
)

# Remote media cache (migration 8)

remote_media = Table(
    "remote_media",
    metadata,
    Column("server_name", Text, primary_key=True),
    Column("media_id", Text, primary_key=True),
    Column("sha256", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("upload_name", Text),
    Column("fetched_ts", BigInteger, nullable=False),
)

# Push rules (migration 9)

push_rules = Table(
    "push_rules",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("kind", Text, primary_key=True),
    Column("rule_id", Text, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("conditions", Text),
    Column("pattern", Text),
    Column("actions", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
)

push_rule_defaults = Table(
    "push_rule_defaults",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("rule_id", Text, primary_key=True),
    Column("enabled", Boolean),
    Column("actions", Text),
)

# Push: notification actions and unread counts, own-event read marks, pushers
# (migration 10)

# (migration 12) One row per event that push rules gave actions to anyone: its
# recipients as JSON, {user_id: [notify 0/1, highlight 0/1, actions]}.
event_push_recipients = Table(
    "event_push_recipients",
    metadata,
    Column("stream_ordering", BigInteger, primary_key=True),
    Column("room_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("thread_id", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("recipients", Text, nullable=False),
)

event_push_summary = Table(
    "event_push_summary",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("room_id", Text, primary_key=True),
    Column("thread_id", Text, primary_key=True),
    Column("notifications", BigInteger, nullable=False),
    Column("highlights", BigInteger, nullable=False),
)

push_own_events = Table(
    "push_own_events",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("room_id", Text, primary_key=True),
    Column("stream_ordering", BigInteger, nullable=False),
)

pushers = Table(
    "pushers",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("app_id", Text, primary_key=True),
    Column("pushkey", Text, primary_key=True),
    Column("device_id", Text),
    Column("kind", Text, nullable=False),
    Column("app_display_name", Text, nullable=False),
    Column("device_display_name", Text, nullable=False),
    Column("profile_tag", Text),
    Column("lang", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("pushkey_ts", BigInteger, nullable=False),
    Column("last_stream_ordering", BigInteger, nullable=False),
)

# Remote device lists (migration 11)

remote_device_lists = Table(
    "remote_device_lists",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("stream_id", BigInteger, nullable=False),
    Column("stale", Boolean, nullable=False),
    Column("master_key", Text),
    Column("self_signing_key", Text),
    Column("updated_ts", BigInteger, nullable=False),
)

remote_devices = Table(
    "remote_devices",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("device_id", Text, primary_key=True),
    Column("display_name", Text),
    Column("key_json", Text),
)

local_device_list_updates = Table(
    "local_device_list_updates",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("stream_id", BigInteger, primary_key=True),
)
