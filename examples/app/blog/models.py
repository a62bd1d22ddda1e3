"""The blog's own model, built on datalayer's conventions, referencing ``users``."""

from __future__ import annotations

import peewee as pw

from datalayer import BaseModel, User
from datalayer.models.fields import created_at_field, timestamptz_field, updated_at_field, uuid_pk


class Post(BaseModel):
    """A post; deleting its author deletes it (ON DELETE CASCADE)."""

    posts_id = uuid_pk("posts_id")
    author = pw.ForeignKeyField(
        User, column_name="users_id", field="id", on_delete="CASCADE", backref="posts", index=True
    )
    title = pw.CharField(max_length=200)
    body = pw.TextField(default="")
    published_at = timestamptz_field(null=True)
    created_at = created_at_field()
    updated_at = updated_at_field()

    class Meta:
        table_name = "posts"
