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
